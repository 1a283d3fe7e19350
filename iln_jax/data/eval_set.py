"""Validation images: full images with deterministic degradations.

Either the embedded held-out photos (astronaut, coffee, chelsea at 240x240) or a benchmark folder:
target + input folders (e.g. Set5/HR + Set5/LR_bicubic/X4, Rain100L/{target,input}), or targets only,
degraded on the fly exactly as benchmarks are made (SR: MATLAB bicubic of the mod-cropped HR; noise
from ``np.random.default_rng(image index)``, unclipped; Pillow JPEG). Ranged noise/JPEG levels are
evaluated at their midpoint.
"""
from __future__ import annotations

import logging

import ml_collections
import numpy as np

from iln_jax.data import config as config_lib
from iln_jax.data import degradations, embedded, images, sources
from iln_jax.data.imresize import modcrop

logger = logging.getLogger(__name__)


def _check_degradable(example: sources.Example, scale: int) -> None:
    """A target from which the input is made (SR: bicubic downscaling) must span one input pixel."""
    h, w = example.gt.shape[:2]
    if min(h, w) < scale:
        raise images.BadImageError(f"{example.gt_label} is {h}x{w}, smaller than the scale x{scale}: no input "
                                   f"can be made from it")


def make_eval_set(config: ml_collections.ConfigDict) -> list[dict]:
    """``[{"name": str, "lq": (h, w, C), "gt": (h*s, w*s, C)}]`` as float32 in [0, 1], in file order.

    Unreadable images, mis-sized pairs and targets smaller than the scale (no input can be made from
    them) raise errors naming the files, or with ``on_bad_image="skip"`` are left out and listed in a
    warning at the end.
    """
    config_lib.check_config(config)
    degradation = degradations.Degradation.from_config(config)
    if config.eval_source == "embedded":
        source = embedded.EmbeddedSource("eval", channels=config.channels, gray=degradation.gray)
    else:
        source = sources.FolderSource.from_folders(config.task, config.eval_root, config.eval_lr_root,
                                                   scale=degradation.scale, channels=config.channels,
                                                   gray=degradation.gray)
    evaluation, skipped = [], []
    for index in range(len(source)):
        try:
            example = source.load(index)
            if example.lq is None:
                _check_degradable(example, degradation.scale)
        except images.BadImageError as e:
            if config.on_bad_image != "skip":
                raise
            skipped.append(str(e))
            continue
        if example.lq is None:
            gt = modcrop(example.gt, degradation.scale)
            lq = degradation.make_input(gt, np.random.default_rng(index), evaluation=True)
        else:
            gt, lq = example.gt, degradations.to_float(example.lq)
        evaluation.append({"name": example.name, "lq": lq, "gt": degradations.to_float(gt)})
    if skipped:
        logger.warning("left %d unusable image(s) out of the evaluation set:\n  %s", len(skipped), "\n  ".join(skipped))
    return evaluation

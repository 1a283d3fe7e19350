"""One training sample: image index + per-sample generator -> aligned, augmented, degraded patch pair.

Everything random (crop position, dihedral transform, noise, JPEG quality, rain) is drawn from the
generator grain derives from (seed, global element index), so a sample does not depend on which
process, worker or thread computes it. Draw order: crop origin, transform, degradation.
"""
from __future__ import annotations

from typing import Union

import grain
import numpy as np

from iln_jax.data import degradations, embedded, images, sources, transforms
from iln_jax.errors import DataError

# Index of the bad image a sample had to skip (-1: none); removed from batches by skip_report.py.
BAD_IMAGE_KEY = "bad_image"

Source = Union[sources.FolderSource, sources.TfdsSource, embedded.EmbeddedSource]


class PatchSampler(grain.transforms.RandomMap):
    """grain RandomMap: shuffled entry -> ``{"lq": (p, p, C), "gt": (p*s, p*s, C), BAD_IMAGE_KEY}``.

    With ``skip_bad_images`` a sample whose image cannot be used is drawn from the next usable image
    (index + 1, + 2, ...), which keeps batches full and deterministic; the skipped index travels with
    the sample so the main process can count and name it.
    """

    def __init__(self, source: Source, degradation: degradations.Degradation, patch_size: int, *,
                 augment: bool, skip_bad_images: bool):
        self._source, self._degradation = source, degradation
        self._patch_size, self._augment, self._skip = patch_size, augment, skip_bad_images

    def random_map(self, entry, rng: np.random.Generator) -> dict:
        """Sample for shuffled ``entry``, which names image ``entry % len(source)``."""
        first_bad = -1
        for attempt in range(len(self._source)):
            candidate = (int(entry) + attempt) % len(self._source)
            try:
                lq, gt = self._patch(candidate, rng)
            except images.BadImageError:
                if not self._skip:
                    raise
                first_bad = candidate if first_bad < 0 else first_bad
                continue
            return {"lq": lq, "gt": gt, BAD_IMAGE_KEY: np.int32(first_bad)}
        # the data set, not one image, is unusable: no "skip it" advice applies (a DataError, not a BadImageError)
        raise DataError(f"none of the {len(self._source)} images is usable, e.g. {self.problem(first_bad)}")

    def problem(self, index: int) -> str:
        """Why image ``index`` cannot be used (for reports), or its label if it can."""
        try:
            self._patch(index, np.random.default_rng(0))
        except images.BadImageError as e:
            return str(e)
        return self._source.label(index)

    def _patch(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        example = self._source.load(index)
        scale, size = self._degradation.scale, self._patch_size
        if example.lq is not None:
            lr_h, lr_w = example.lq.shape[:2]
        else:
            lr_h, lr_w = example.gt.shape[0] // scale, example.gt.shape[1] // scale
        if lr_h < size or lr_w < size:
            raise images.BadImageError(
                f"image {self._source.label(index)} is {example.gt.shape[0]}x{example.gt.shape[1]}, smaller "
                f"than the {size * scale}x{size * scale} target patch (patch_size {size} x scale {scale})")
        top, left = transforms.random_crop_origin(rng, lr_h, lr_w, size)
        arrays = [transforms.crop(example.gt, top * scale, left * scale, size * scale)]
        if example.lq is not None:
            arrays.append(transforms.crop(example.lq, top, left, size))
        elif self._degradation.task == "sr":
            arrays.append(degradations.bicubic_lr_patch(example.gt, scale, top, left, size, size))
        if self._augment:
            arrays = transforms.random_dihedral(arrays, rng)
        gt = arrays[0]
        if len(arrays) == 2:
            lq = degradations.to_float(arrays[1])
        else:
            lq = self._degradation.make_input(gt, rng)
        return lq, degradations.to_float(gt)

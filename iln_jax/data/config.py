"""The data configuration: every field the training and evaluation data paths read, in one place.

:func:`default_config` returns a locked ``ml_collections.ConfigDict`` (unknown keys are errors) whose
defaults train SR x2 on the embedded scikit-image photos with 32x32 LR patches, so ``python train.py``
runs with no data on disk. A training config embeds it as ``config.data = default_config()``.

Fields
------
Task (what a sample is):
  ``task``          "sr" (bicubic super-resolution), "dn" (Gaussian denoising), "car" (JPEG compression
                    artifact removal) or "dr" (deraining).
  ``scale``         SR factor (2, 3, 4 or 8). Only read when task == "sr"; the other tasks use 1.
  ``noise_sigma``   "dn": sigma on the 0..255 scale, a number (15/25/50) or ``[lo, hi]`` for blind
                    denoising (sigma ~ U(lo, hi) per patch, Restormer's [0, 50]).
  ``jpeg_quality``  "car": Pillow JPEG quality, an int (10/20/30/40) or ``[lo, hi]`` (q uniform in
                    the inclusive range per patch).
  ``channels``      3 (RGB) or 1 (gray). Gray is the BT.601 Y channel (16..235, rounded; SwinIR's
                    gray JPEG convention) except for "dn", which uses full-range luma 0.299R+0.587G+0.114B
                    (cv2.IMREAD_GRAYSCALE, KAIR's gray denoising convention). Gray files feeding a
                    colour task are replicated to RGB; alpha channels are dropped.

Patches and batches:
  ``patch_size``    LR (input) patch side p; the target patch is p * scale.
  ``batch_size``    global batch; each process gets batch_size / process_count.
  ``augment``       random flips and rot90 (the 8 dihedral transforms, uniformly), as BasicSR's
                    use_hflip + use_rot and Restormer's geometric_augs.

Training source:
  ``source``        "embedded" (scikit-image photos, see ``embedded.py``), "folder" or "tfds".
  ``root``          "folder": the target folder (SR: HR images; dn/car: clean images; dr: a folder
                    holding ``input/`` and ``target/``). "tfds": the manual_dir to prepare from
                    when the dataset is not prepared yet (single-process runs only).
  ``lr_root``       "folder": folder of paired inputs (SR: LR images named like the HR ones, with or
                    without the ``x{scale}`` suffix; dr: rainy images). Unset: inputs are made on the
                    fly (SR: MATLAB bicubic of the HR image; dn/car: noise/JPEG).
  ``tfds_data_dir`` "tfds": where the prepared ArrayRecord files live.
  ``tfds_name``     "tfds": builder/config, e.g. "df2k/x4", "df2k/hr" (HR only, LR made on the fly),
                    "rain13k". Unset: "df2k/x{scale}" for sr, "df2k/hr" for dn/car, "rain13k" for dr.

Loading:
  ``num_workers``        grain worker processes (0 = decode in threads of the calling process).
                         The batches do not depend on it.
  ``worker_buffer_size`` batches each worker prepares ahead.
  ``read_threads``       threads per process (or per worker) computing batches.
  ``on_bad_image``       "error": an unreadable/corrupt image, an image smaller than the patch or an
                         LR/HR pair whose sizes disagree stops training with a message naming the
                         file(s). "skip": the patch is drawn from the next image instead; the iterator
                         counts and names the skipped files (logged when first seen and on close).

Evaluation (``make_eval_set``):
  ``eval_source``   "embedded" (held-out photos, centre-cropped to 240x240) or "folder".
  ``eval_root``     benchmark target folder (e.g. Set5/HR or Set5/GTmod4; dr: a folder with
                    ``input/`` and ``target/``, e.g. Rain100L).
  ``eval_lr_root``  benchmark input folder (e.g. Set5/LR_bicubic/X4). Unset: inputs are degraded on
                    the fly with a fixed seed per image index. Ranges of ``noise_sigma`` or
                    ``jpeg_quality`` are evaluated at their midpoint; to evaluate a blind model at
                    another level, pass a copy of the config with that level.
"""
from __future__ import annotations

import numbers

import ml_collections
from ml_collections import config_dict

from iln_jax.errors import ConfigError

# The restoration tasks, the one list every other module (evaluation, pretrained, configs) uses.
TASKS = ("sr", "dn", "car", "dr")
SR_SCALES = (2, 3, 4, 8)
SOURCES = ("embedded", "folder", "tfds")
EVAL_SOURCES = ("embedded", "folder")
BAD_IMAGE_POLICIES = ("error", "skip")


def default_config() -> ml_collections.ConfigDict:
    """The data config with defaults for SR x2 on the embedded photos; locked against unknown keys."""
    config = ml_collections.ConfigDict()
    config.task = "sr"
    config.scale = 2
    # Either a number or a [lo, hi] range, so the field must accept both types.
    config.noise_sigma = ml_collections.FieldReference(25, field_type=object)
    config.jpeg_quality = ml_collections.FieldReference(40, field_type=object)
    config.channels = 3

    config.patch_size = 32
    config.batch_size = 16
    config.augment = True

    config.source = "embedded"
    config.root = config_dict.placeholder(str)
    config.lr_root = config_dict.placeholder(str)
    config.tfds_data_dir = config_dict.placeholder(str)
    config.tfds_name = config_dict.placeholder(str)

    config.num_workers = 0
    config.worker_buffer_size = 2
    config.read_threads = 4
    config.on_bad_image = "error"

    config.eval_source = "embedded"
    config.eval_root = config_dict.placeholder(str)
    config.eval_lr_root = config_dict.placeholder(str)
    config.lock()
    return config


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the first field whose value the data path cannot use."""
    _require(config.task in TASKS, "task", config.task, f"one of {TASKS}")
    if config.task == "sr":
        _require(config.scale in SR_SCALES, "scale", config.scale, f"one of {SR_SCALES} for task 'sr'")
    _require(config.channels in (1, 3), "channels", config.channels, "1 or 3")
    level_range(config.noise_sigma, "noise_sigma", low=0)
    level_range(config.jpeg_quality, "jpeg_quality", low=1, high=100, integer=True)
    _require(config.patch_size >= 1, "patch_size", config.patch_size, "a positive int")
    _require(config.batch_size >= 1, "batch_size", config.batch_size, "a positive int")
    _require(config.source in SOURCES, "source", config.source, f"one of {SOURCES}")
    if config.source == "folder":
        _require(config.root is not None, "root", config.root, "a folder when source == 'folder'")
    if config.source == "tfds":
        _require(config.tfds_data_dir is not None, "tfds_data_dir", None, "a folder when source == 'tfds'")
    _require(config.num_workers >= 0, "num_workers", config.num_workers, ">= 0")
    _require(config.worker_buffer_size >= 1, "worker_buffer_size", config.worker_buffer_size, ">= 1")
    _require(config.read_threads >= 1, "read_threads", config.read_threads, ">= 1")
    _require(config.on_bad_image in BAD_IMAGE_POLICIES, "on_bad_image", config.on_bad_image,
             f"one of {BAD_IMAGE_POLICIES}")
    _require(config.eval_source in EVAL_SOURCES, "eval_source", config.eval_source, f"one of {EVAL_SOURCES}")
    if config.eval_source == "folder":
        _require(config.eval_root is not None, "eval_root", None, "a folder when eval_source == 'folder'")


def effective_scale(config: ml_collections.ConfigDict) -> int:
    """The LR->HR size factor of a sample: ``scale`` for SR, 1 for every other task."""
    return config.scale if config.task == "sr" else 1


def level_range(value, name: str, *, low: float, high: float | None = None, integer: bool = False):
    """Normalise a level given as a number or ``[lo, hi]`` to a ``(lo, hi)`` tuple, validating bounds."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        lo, hi = value
    else:
        raise ConfigError(f"data config field {name!r} must be a number or [lo, hi], got {value!r}")
    kind = "an integer" if integer else "a number"
    if integer and not (float(lo).is_integer() and float(hi).is_integer()):
        raise ConfigError(f"data config field {name!r} must be {kind} or [lo, hi] of integers, got {value!r}")
    if not (low <= lo <= hi) or (high is not None and hi > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"data config field {name!r} must lie in {bounds} with lo <= hi, got {value!r}")
    return (int(lo), int(hi)) if integer else (float(lo), float(hi))


def _require(ok: bool, field: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(f"data config field {field!r} must be {expected}, got {value!r}")

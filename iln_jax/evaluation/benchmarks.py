"""Benchmark folders -> evaluation sets, through ``iln_jax.data.make_eval_set`` (pairing, size
checks and on-the-fly degradations live there; this module only finds the folders).

Layouts recognised for a dataset folder ``D`` (names matched case-insensitively under a root):

* **sr**: ``D/HR`` + ``D/LR_bicubic/X{s}`` (SwinIR's testsets, ``tests/data/Set5``); BasicSR's
  ``D/GTmod{s}`` + ``D/LRbicx{s}``; ``D/HR`` alone or images directly in ``D``: LR made on the fly
  with MATLAB bicubic of the mod-cropped HR.
* **dn** / **car**: clean images in ``D`` (or ``D/HR``, ``D/GT``, ``D/target``); noisy / JPEG inputs
  are made on the fly (noise seeded per image index, unclipped; Pillow JPEG at quality q).
* **dr**: ``D/input`` + ``D/target`` (Restormer's ``Datasets/test/Rain100L``).

Unpaired files, mis-sized pairs and unreadable images raise errors naming the files
(``iln_jax.data.sources``).
"""
from __future__ import annotations

import os
from typing import Optional

from etils import epath

from iln_jax import data as data_lib
from iln_jax.evaluation.tasks import BENCHMARKS
from iln_jax.errors import DataNotFoundError

_CLEAN_SUBDIRS = ("HR", "GT", "target", "gt", "hr", "clean")


def _child(folder: str, name: str) -> Optional[str]:
    """``folder/name`` matched case-insensitively, or None."""
    if not _is_dir(folder):
        return None
    exact = os.path.join(folder, name)
    if _is_dir(exact):
        return exact
    for entry in epath.Path(folder).iterdir():
        if entry.name.lower() == name.lower() and entry.is_dir():
            return os.path.join(folder, entry.name)
    return None


def _is_dir(folder: str) -> bool:
    return epath.Path(folder).is_dir()  # local or gs://...


def resolve_dataset(root: Optional[str], name_or_path: str) -> tuple[str, str]:
    """``(dataset name, folder)`` for a name under ``root`` (or a path to the folder itself)."""
    if _is_dir(name_or_path):
        return os.path.basename(os.path.normpath(name_or_path)), name_or_path
    found = _child(root, name_or_path) if root else None
    if found is None:
        where = f"under {root}" if root else "(give --data-root, or a path)"
        have = []
        if root and _is_dir(root):
            have = sorted(e.name for e in epath.Path(root).iterdir() if e.is_dir())
        shown = ", ".join(have[:12]) + (f", ... ({len(have) - 12} more)" if len(have) > 12 else "")
        raise DataNotFoundError(f"Benchmark folder {name_or_path!r} not found {where}"
                                + (f"; it contains {shown}" if have else ""))
    return name_or_path, found


def folders(task: str, folder: str, scale: int) -> tuple[str, Optional[str]]:
    """``(target folder, input folder or None)`` of a dataset folder in one of the known layouts."""
    if task == "sr":
        for hr_name, lr_path in (("HR", ("LR_bicubic", f"X{scale}")), (f"GTmod{scale}", (f"LRbicx{scale}",))):
            hr = _child(folder, hr_name)
            if hr is None:
                continue
            lr = folder
            for part in lr_path:
                lr = _child(lr, part) if lr else None
            return hr, lr
        return folder, None
    if task == "dr":
        inp, tgt = _child(folder, "input"), _child(folder, "target")
        if inp is None or tgt is None:
            raise DataNotFoundError(f"{folder} lacks input/ and target/ subfolders (the deraining layout)")
        return tgt, inp
    for sub in _CLEAN_SUBDIRS:
        clean = _child(folder, sub)
        if clean is not None:
            return clean, None
    return folder, None


def _task_config(task: str, scale: int, noise_sigma, jpeg_quality, channels: int):
    config = data_lib.default_config()
    config.task = task
    config.scale = scale if task == "sr" else 1
    config.noise_sigma = noise_sigma
    config.jpeg_quality = jpeg_quality
    config.channels = channels
    return config


def data_config(task: str, folder: str, *, scale: int = 1, noise_sigma=25, jpeg_quality=40, channels: int = 3,
                on_bad_image: str = "error"):
    """The ``iln_jax.data`` config that ``make_eval_set`` reads for this benchmark folder."""
    config = _task_config(task, scale, noise_sigma, jpeg_quality, channels)
    config.on_bad_image = on_bad_image
    config.eval_source = "folder"
    config.eval_root, config.eval_lr_root = folders(task, folder, scale)
    return config


def embedded_config(task: str, *, scale: int = 1, noise_sigma=25, jpeg_quality=40, channels: int = 3):
    """The embedded held-out photos (astronaut, coffee, chelsea) with the task's degradation."""
    config = _task_config(task, scale, noise_sigma, jpeg_quality, channels)
    config.eval_source = "embedded"
    return config


def load(config) -> list[dict]:
    return data_lib.make_eval_set(config)


def default_datasets(task: str) -> tuple[str, ...]:
    return BENCHMARKS[task]

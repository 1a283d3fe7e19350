"""Random-access image sources: folders in the field's layouts and prepared TFDS datasets.

A source maps an index to an :class:`Example` (clean ``gt`` image and, for paired data, the ``lq``
input, both uint8 HWC with the task's channels). Sources hold only paths or a TFDS handle, so they
pickle cheaply into grain worker processes; images are decoded on access. Pairing by file name
happens when a source is built (listing folders is cheap even for DF2K's 140k sub-images); image
sizes are checked when an image is read, so start-up does not open every file.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
from etils import epath

from iln_jax.data import images
from iln_jax.errors import DataError, DataNotFoundError

FOLDER_LAYOUTS = {
    "sr": ("root = the HR folder (e.g. DF2K/DF2K_HR_sub, DIV2K/DIV2K_train_HR, Set5/HR) of .png/.jpg "
           "images; optional lr_root = the LR folder of the same scale (e.g. DF2K/DF2K_bicx4_sub, "
           "DIV2K/DIV2K_train_LR_bicubic/X4, Set5/LR_bicubic/X4) whose files are named like the HR ones, "
           "with or without an 'x{scale}' suffix (0001x4.png); without lr_root the LR images are made on "
           "the fly with MATLAB bicubic"),
    "dn": ("root = a folder of clean .png/.jpg images (e.g. DFWB, DF2K/DF2K_HR_sub, CBSD68); noisy "
           "inputs are made on the fly, or read from lr_root = a folder of equally named noisy images"),
    "car": ("root = a folder of clean .png/.jpg images (e.g. DFWB, DF2K/DF2K_HR_sub, LIVE1); JPEG "
            "inputs are made on the fly, or read from lr_root = a folder of equally named JPEG-decoded images"),
    "dr": ("root = a folder with input/ (rainy) and target/ (clean) subfolders of equally named images "
           "(Restormer's Datasets/train/Rain13K, Datasets/test/Rain100L), or root = the clean folder "
           "and lr_root = the rainy folder"),
}


@dataclasses.dataclass(frozen=True)
class Example:
    """One image (pair) as uint8 HWC arrays; labels name the files in error messages."""

    name: str
    gt: np.ndarray
    lq: Optional[np.ndarray]
    gt_label: str
    lq_label: Optional[str]


def check_pair_sizes(gt_size: tuple[int, int], lq_size: tuple[int, int], scale: int, gt_label: str,
                     lq_label: str) -> None:
    """Raise naming both files unless the target is ``scale`` x the input size.

    A target up to ``scale - 1`` pixels larger than ``scale * LR`` is accepted (HR that was not
    mod-cropped before downscaling); readers crop it to exactly ``scale * LR``.
    """
    (h, w), (big_h, big_w) = lq_size, gt_size
    if not (h * scale <= big_h < (h + 1) * scale and w * scale <= big_w < (w + 1) * scale):
        expected = (f"{h}x{w}" if scale == 1 else
                    f"{h * scale}..{h * scale + scale - 1} x {w * scale}..{w * scale + scale - 1}")
        raise images.BadImageError(
            f"input/target sizes disagree at scale {scale}: {lq_label} is {h}x{w}, so {gt_label} "
            f"should be {expected}, but it is {big_h}x{big_w}")


def _is_dir(folder: str) -> bool:
    """A local folder or a URL (``gs://...``, through etils.epath)."""
    return epath.Path(folder).is_dir()


def image_files(folder: str, task: str) -> list[str]:
    """The images of ``folder``; errors describe the layout ``task`` expects."""
    if not _is_dir(folder):
        raise DataNotFoundError(f"data folder {folder} does not exist. Expected layout: {FOLDER_LAYOUTS[task]}")
    files = images.list_images(folder)
    if not files:
        subdirs = sorted(p.name for p in epath.Path(folder).iterdir() if p.is_dir())
        found = f"; it contains the folders {subdirs}" if subdirs else ""
        raise DataError(f"no images ({', '.join(images.IMAGE_EXTENSIONS)}) in {folder}{found}. "
                         f"Expected layout: {FOLDER_LAYOUTS[task]}")
    return files


def pair_files(gt_files: Sequence[str], lq_files: Sequence[str], scale: int) -> list[str]:
    """For each target file, its input file: same stem, or stem + ``x{scale}`` (DIV2K's LR naming).

    Unmatched files on either side are an error naming them, since silently dropping them would
    change the data set.
    """
    by_stem: dict[str, str] = {}
    for path in lq_files:
        stem = _stem(path)
        if stem in by_stem:
            raise DataError(f"two input images share the name {stem!r}: {by_stem[stem]} and {path}")
        by_stem[stem] = path
    paired, missing = [], []
    for path in gt_files:
        stem = _stem(path)
        candidates = (f"{stem}x{scale}", stem) if scale > 1 else (stem,)
        match = next((c for c in candidates if c in by_stem), None)
        if match is None:
            missing.append(path)
        else:
            paired.append(by_stem.pop(match))
    if missing or by_stem:
        parts = []
        if missing:
            parts.append(f"{len(missing)} target image(s) without an input, e.g. {_few(missing)}")
        if by_stem:
            parts.append(f"{len(by_stem)} input image(s) without a target, e.g. {_few(sorted(by_stem.values()))}")
        suffix = f" (inputs may carry an 'x{scale}' suffix)" if scale > 1 else ""
        raise DataError("unpaired images: " + "; ".join(parts) + f". Inputs must be named like their targets{suffix}.")
    return paired


class FolderSource:
    """Images (or pairs) listed from folders; see ``FOLDER_LAYOUTS`` for what each task expects."""

    def __init__(self, gt_files: Sequence[str], lq_files: Optional[Sequence[str]], *, scale: int,
                 channels: int, gray: str):
        self._gt_files = list(gt_files)
        self._lq_files = None if lq_files is None else list(lq_files)
        self._scale, self._channels, self._gray = scale, channels, gray

    @classmethod
    def from_folders(cls, task: str, root: str, lr_root: Optional[str], *, scale: int, channels: int,
                     gray: str) -> "FolderSource":
        """Build from a task's folder layout (deraining reads ``root/input`` + ``root/target``)."""
        if task == "dr" and lr_root is None:
            if not _is_dir(root):
                raise DataNotFoundError(f"data folder {root} does not exist. Expected layout: {FOLDER_LAYOUTS[task]}")
            lr_root, root = os.path.join(root, "input"), os.path.join(root, "target")
            if not (_is_dir(root) and _is_dir(lr_root)):
                raise DataNotFoundError(f"{os.path.dirname(root)} lacks input/ and target/ subfolders. "
                                        f"Expected layout: {FOLDER_LAYOUTS[task]}")
        gt_files = image_files(root, task)
        lq_files = None if lr_root is None else pair_files(gt_files, image_files(lr_root, task), scale)
        return cls(gt_files, lq_files, scale=scale, channels=channels, gray=gray)

    @property
    def paired(self) -> bool:
        return self._lq_files is not None

    def __len__(self) -> int:
        return len(self._gt_files)

    def label(self, index: int) -> str:
        if self._lq_files is None:
            return self._gt_files[index]
        return f"{self._gt_files[index]} (input {self._lq_files[index]})"

    def load(self, index: int) -> Example:
        gt_path = self._gt_files[index]
        gt = images.read_image(gt_path, gt_path, self._channels, self._gray)
        if self._lq_files is None:
            return Example(_stem(gt_path), gt, None, gt_path, None)
        lq_path = self._lq_files[index]
        lq = images.read_image(lq_path, lq_path, self._channels, self._gray)
        return _paired_example(_stem(gt_path), gt, lq, self._scale, gt_path, lq_path)


class TfdsSource:
    """A split of a prepared ``df2k`` / ``rain13k`` dataset (records from ``tfds.data_source``).

    Records hold the original encoded files (see ``tfds_builders.py``), decoded here like folder
    images; ``lq_key`` is None for HR-only data.
    """

    def __init__(self, records: Sequence[dict], dataset: str, *, gt_key: str, lq_key: Optional[str],
                 scale: int, channels: int, gray: str):
        self._records, self._dataset = records, dataset
        self._gt_key, self._lq_key = gt_key, lq_key
        self._scale, self._channels, self._gray = scale, channels, gray

    @property
    def paired(self) -> bool:
        return self._lq_key is not None

    def __len__(self) -> int:
        return len(self._records)

    def label(self, index: int) -> str:
        return self._label(index, self._records[index])

    def load(self, index: int) -> Example:
        record = self._records[index]
        name, base = record["name"].decode(), self._label(index, record)
        gt_label = f"{base}.{self._gt_key}"
        gt = images.read_image(record[self._gt_key], gt_label, self._channels, self._gray)
        if self._lq_key is None:
            return Example(name, gt, None, gt_label, None)
        lq_label = f"{base}.{self._lq_key}"
        lq = images.read_image(record[self._lq_key], lq_label, self._channels, self._gray)
        return _paired_example(name, gt, lq, self._scale, gt_label, lq_label)

    def _label(self, index: int, record: dict) -> str:
        return f"{self._dataset}[{index}] ({record['name'].decode()})"


def _paired_example(name: str, gt: np.ndarray, lq: np.ndarray, scale: int, gt_label: str,
                    lq_label: str) -> Example:
    check_pair_sizes(gt.shape[:2], lq.shape[:2], scale, gt_label, lq_label)
    return Example(name, gt[:lq.shape[0] * scale, :lq.shape[1] * scale], lq, gt_label, lq_label)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _few(paths: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f", ... ({len(paths) - limit} more)" if len(paths) > limit else "")

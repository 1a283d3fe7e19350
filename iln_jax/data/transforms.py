"""Aligned random crops and geometric augmentation (the only augmentations of the field's recipes).

Crops are drawn on the LR grid and scaled to the HR grid, so an LR patch at (y, x) always pairs with
the HR patch at (y * s, x * s). Augmentation applies one of the 8 dihedral transforms (identity,
flips, rot90s, transposes) uniformly and identically to every array of a sample; BasicSR's
hflip/vflip/rot90(transpose) coin flips and Restormer's geometric_augs reach the same 8 transforms.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def random_crop_origin(rng: np.random.Generator, height: int, width: int, size: int) -> tuple[int, int]:
    """Top-left corner of a uniformly random ``size`` x ``size`` window in a ``height`` x ``width`` image."""
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def crop(img: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return img[top:top + size, left:left + size]


def dihedral(arrays: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    """Apply dihedral transform ``k`` in 0..7 (rot90 ``k % 4`` times, then flip left-right if k >= 4)."""
    out = []
    for a in arrays:
        a = np.rot90(a, k % 4, axes=(0, 1))
        if k >= 4:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def random_dihedral(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same uniformly drawn dihedral transform applied to every array."""
    return dihedral(arrays, int(rng.integers(8)))

"""x8 geometric self-ensemble (EDSR's "+", SwinIR/HAT ``--self_ensemble``, KAIR ``test_mode x8``).

The image is restored under each of the 8 dihedral transforms (4 rotations x optional flip), each
output is transformed back, and the 8 outputs are averaged. Rotations by 90 degrees swap H and W,
so a non-square image costs two compilations per shape bucket.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from iln_jax.data import transforms

NUM_TRANSFORMS = 8


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """Transform k of an (H, W, C) image, the training augmentation's (``data.transforms.dihedral``):
    rotate by ``k % 4`` quarter turns, then flip left-right if ``k >= 4``."""
    return transforms.dihedral([img], k)[0]


def inverse_dihedral(img: np.ndarray, k: int) -> np.ndarray:
    out = img[:, ::-1] if k >= 4 else img
    return np.ascontiguousarray(np.rot90(out, -(k % 4), axes=(0, 1)))


def self_ensemble(restore: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """Mean of ``inverse_k(restore(transform_k(image)))`` over the 8 transforms (float32)."""
    total = None
    for k in range(NUM_TRANSFORMS):
        out = inverse_dihedral(np.asarray(restore(dihedral(image, k)), np.float32), k)
        total = out if total is None else total + out
    return total / NUM_TRANSFORMS

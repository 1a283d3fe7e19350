"""Official non-parameter buffers of the Swin family: recomputed, never trusted, but checked.

``relative_position_index`` must equal the one for the model's window size. A stored
``attn_mask`` only reflects the *training* ``img_size`` (SwinIR #129): it is accepted whatever its
size, as long as it is the correct shifted-window mask for the resolution its shape implies.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from iln_jax.layers.window import shifted_window_mask


def check_swin_buffer(key: str, stored: np.ndarray, expected: dict[str, np.ndarray]) -> Optional[str]:
    """Return a problem description, or None when ``stored`` is consistent with the model."""
    if key not in expected:
        return f"{key}: a buffer the model does not have"
    want = expected[key]
    if key.endswith("attn_mask") and stored.shape != want.shape:
        return _check_mask_of_other_size(key, stored, want)
    if stored.shape != want.shape:
        return f"{key}: shape {tuple(stored.shape)}, expected {tuple(want.shape)}"
    if not np.array_equal(np.asarray(stored, want.dtype), want):
        return f"{key}: values differ from the model's own (window size or shift mismatch?)"
    return None


def _check_mask_of_other_size(key, stored, want) -> Optional[str]:
    n = want.shape[-1]
    ws = math.isqrt(n)
    side = math.isqrt(stored.shape[0])
    if stored.ndim != 3 or stored.shape[1:] != (n, n) or side * side != stored.shape[0]:
        return f"{key}: shape {tuple(stored.shape)} is not a (nW, {n}, {n}) mask of a square training size"
    res = side * ws
    if not np.array_equal(stored, np.asarray(shifted_window_mask(res, res, ws, ws // 2))):
        return f"{key}: not the shifted-window mask of a {res}x{res} input with window {ws}"
    return None  # a mask of another training size: harmless, masks are rebuilt from the input

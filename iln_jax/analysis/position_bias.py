"""Per-head relative-position-bias images (the i-LN paper's Fig. 9).

A Swin window attention learns a table of ``(2ws-1)^2`` biases per head, indexed by the offset
``query - key`` (row offset + ws - 1, column offset + ws - 1). Reshaped, each head's table is a
``(2ws-1) x (2ws-1)`` image whose centre pixel is the bias of a token attending to itself: a
bright centre fading outwards is a local (low-pass) head; a flat image is a global one.

HAT's overlapping cross-attention (OCAB) table has ``(ws + wse - 1)^2`` rows indexed by
``key - query`` plus a constant, taken modulo the table size (see ``layers/window.py``); with the
model's ``window_size`` and ``overlap_ratio`` the images are rolled so that zero offset is at the
centre, as for the Swin tables.

Per head, :func:`head_locality` gives the Pearson correlation between the bias and minus the
offset's Euclidean length (1: strictly decreasing with distance) and the centre's excess over the
mean.
"""
from __future__ import annotations

from typing import Optional

import flax
import numpy as np

from iln_jax.layers.window import overlap_window_size

TABLE = "relative_position_bias_table"


def position_bias_images(params, module=None) -> dict[str, np.ndarray]:
    """``{attention module path: (heads, S, S) float32}`` for every relative-position table."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    out = {}
    for path, table in flat.items():
        if path[-1] != TABLE:
            continue
        table = np.asarray(table, np.float32)
        side = int(round(table.shape[0] ** 0.5))
        if side * side != table.shape[0]:
            raise ValueError(f"{'/'.join(path)}: {table.shape[0]} rows is not a square")
        table = np.roll(table, _ocab_roll(path, side, module), axis=0)
        out["/".join(path[:-1])] = table.reshape(side, side, -1).transpose(2, 0, 1)
    return out


def _ocab_roll(path, side: int, module) -> int:
    """Roll of the flat OCAB table that puts zero offset at the image centre (0 for Swin tables).

    With pad = (wse - ws) / 2 and key-query offset (dy, dx) (key measured from its window's
    centre-aligned origin), the official flat index is ``(dy + pad + ws - wse + 1) * S + (dx + pad + ws -
    wse + 1)`` modulo S^2 -- the modulo acts on the flat index, so a negative column borrows from the
    row -- while the centred image wants ``(dy + pad + ws - 1) * S + (dx + pad + ws - 1)``: a flat roll
    by ``(wse - 2) * (S + 1)``.
    """
    if "overlap_attn" not in path or module is None or not hasattr(module, "overlap_ratio"):
        return 0
    ws = module.window_size
    wse = overlap_window_size(ws, module.overlap_ratio)
    if ws + wse - 1 != side:
        return 0
    return ((wse - 2) * (side + 1)) % (side * side)


def head_locality(images: np.ndarray) -> list[dict[str, float]]:
    """Per head of a (heads, S, S) image stack: distance correlation and centre excess."""
    heads, side, _ = images.shape
    c = (side - 1) / 2
    yy, xx = np.mgrid[:side, :side]
    dist = np.hypot(yy - c, xx - c).ravel()
    out = []
    for h in range(heads):
        v = images[h].ravel().astype(np.float64)
        corr = float(np.corrcoef(v, -dist)[0, 1]) if v.std() > 0 else 0.0
        out.append({"distance_corr": corr, "centre_minus_mean": float(images[h][side // 2, side // 2] - v.mean()),
                    "std": float(v.std())})
    return out


def summary(params, module=None) -> dict[str, list[dict[str, float]]]:
    return {name: head_locality(img) for name, img in position_bias_images(params, module).items()}


def mean_locality(locality: dict[str, list[dict[str, float]]]) -> Optional[float]:
    """The distance correlation averaged over every head of every table of a :func:`summary`
    (None without tables)."""
    values = [h["distance_corr"] for heads in locality.values() for h in heads]
    return float(np.mean(values)) if values else None

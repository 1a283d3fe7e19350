"""Tiled inference: restore an image of any size through fixed-size, overlapping tiles.

Tiles are placed as in the official SwinIR / HAT / Restormer ``--tile`` code: start positions
``0, stride, 2*stride, ...`` with ``stride = tile - overlap`` and a last tile flush with the image
border, so every tile has the same shape (one compilation) and covers the image. Tiles are run
``tile_batch`` at a time, so the device only ever holds ``tile_batch`` tiles and their
activations: peak device memory is set by the tile size, not the image size. The output is
accumulated on the host.

Overlapping outputs are blended with per-pixel weights:

* ``"mean"``: uniform weights, i.e. the plain average of the official code;
* ``"linear"`` (default): weights ramping linearly from ~0 at a tile's edge to 1 at
  ``overlap * scale`` output pixels inside it, so every output pixel comes mostly from the tile
  in which it lies farthest from an edge (where the tile's receptive field is least truncated).
  At the image border only one tile contributes, so its small weight there cancels out.

Whole-image and tiled outputs differ only near tile seams, by how much a tile edge truncates the
model's receptive field; a larger overlap shrinks the difference (``tests/inference_tiling_test.py``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

BLENDS = ("linear", "mean")


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: every ``tile - overlap``, the last one flush with the end."""
    if tile >= size:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile); got overlap={overlap}, tile={tile}")
    stride = tile - overlap
    return list(range(0, size - tile, stride)) + [size - tile]


def blend_weights(length: int, ramp: int, blend: str) -> np.ndarray:
    """1-D weights of one tile's output along an axis."""
    if blend == "mean" or ramp <= 0:
        return np.ones(length, np.float32)
    if blend != "linear":
        raise ValueError(f"Unknown blend {blend!r}; valid: {', '.join(BLENDS)}")
    i = np.arange(length, dtype=np.float32)
    edge = np.minimum(i + 1, length - i)
    return np.clip(edge / (ramp + 1), 1e-3, 1.0).astype(np.float32)


def tiled_restore(apply_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, *, tile: int, overlap: int,
                  scale: int, tile_batch: int = 1, blend: str = "linear",
                  on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Restore an (H, W, C) image with ``apply_fn((n, th, tw, C)) -> (n, th*s, tw*s, C_out)``.

    ``tile`` is the tile side in input pixels (clamped to the image), ``overlap`` the overlap of
    neighbouring tiles in input pixels. Returns the float32 (H*s, W*s, C_out) output.
    """
    if tile < 1 or tile_batch < 1:
        raise ValueError(f"tile and tile_batch must be >= 1, got tile={tile}, tile_batch={tile_batch}")
    h, w = image.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    positions = [(y, x) for y in tile_starts(h, th, min(overlap, th - 1))
                 for x in tile_starts(w, tw, min(overlap, tw - 1))]
    weight = np.outer(blend_weights(th * scale, overlap * scale, blend),
                      blend_weights(tw * scale, overlap * scale, blend))[..., None]
    out = weight_sum = None
    for i in range(0, len(positions), tile_batch):
        chunk = positions[i:i + tile_batch]
        batch = np.stack([image[y:y + th, x:x + tw] for y, x in chunk])
        if len(chunk) < tile_batch:  # keep one shape: pad the last batch with repeats
            batch = np.concatenate([batch, np.repeat(batch[-1:], tile_batch - len(chunk), axis=0)])
        restored = np.asarray(apply_fn(batch), np.float32)[:len(chunk)]
        if out is None:
            out = np.zeros((h * scale, w * scale, restored.shape[-1]), np.float32)
            weight_sum = np.zeros((h * scale, w * scale, 1), np.float32)
        for (y, x), r in zip(chunk, restored):
            ys, xs = slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale)
            out[ys, xs] += r * weight
            weight_sum[ys, xs] += weight
        if on_batch is not None:
            on_batch(len(chunk))
    return out / weight_sum


def num_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    """How many ``tile`` x ``tile`` tiles (``overlap`` px shared by neighbours) cover a
    ``height`` x ``width`` image, as the tiled restore places them."""
    th, tw = min(tile, height), min(tile, width)
    return len(tile_starts(height, th, min(overlap, th - 1))) * len(tile_starts(width, tw, min(overlap, tw - 1)))

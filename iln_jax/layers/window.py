"""Window partitioning, relative-position indices and shifted-window masks (Swin/SwinIR/HAT/DRCT).

Relative-position indices depend only on the window size and are NumPy constants. The shifted-window
mask is built in the graph from the (padded) input size with iota arithmetic: XLA fuses it into the
attention logits instead of embedding a per-shape constant (for a large evaluation image that would
be hundreds of MB), and it works for symbolic sizes (``jax.export``). Masks are never taken from a
stored buffer, which is why a checkpoint trained at another ``img_size`` loads and runs unchanged.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from iln_jax.layers.rearrange import roll

# The official code masks cross-region pairs with -100 (not -inf): after softmax they are ~4e-44,
# and an all-masked row stays finite.
MASK_VALUE = -100.0


def to_windows(x: jnp.ndarray, window_size: int, shift_size: int = 0) -> jnp.ndarray:
    """(B, H, W, C) -> (B, nW, ws², C): cyclically shifted by ``-shift_size``, windows row-major.

    Flattening the first two axes gives the official ``window_partition`` order (batch-major).
    """
    if shift_size:
        x = roll(x, (-shift_size, -shift_size), (1, 2))
    b, h, w, c = x.shape
    ws = window_size
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def from_windows(windows: jnp.ndarray, window_size: int, height: int, width: int,
                 shift_size: int = 0) -> jnp.ndarray:
    """Inverse of :func:`to_windows`: (B, nW, ws², C) -> (B, H, W, C), shifted back by ``+shift_size``."""
    ws = window_size
    b, c = windows.shape[0], windows.shape[-1]
    x = windows.reshape(b, height // ws, width // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, height, width, c)
    if shift_size:
        x = roll(x, (shift_size, shift_size), (1, 2))
    return x


@functools.lru_cache(maxsize=None)
def relative_position_index(window_size: int) -> np.ndarray:
    """(ws², ws²) index into the ((2ws-1)², heads) bias table; query minus key, as Swin."""
    ws = window_size
    coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (ws - 1)
    return (rel[..., 0] * (2 * ws - 1) + rel[..., 1]).astype(np.int64)


def shifted_window_mask(height, width, window_size: int, shift_size: int, dtype=jnp.float32) -> jnp.ndarray:
    """(nW, ws², ws²) additive mask for cyclically shifted windows (SwinIR's ``calculate_mask``).

    A shifted image splits, along each axis, into the regions ``[0, n-ws)``, ``[n-ws, n-s)`` and
    ``[n-s, n)``; two tokens of a window may attend to each other only inside the same region of
    both axes. Built from iotas, so ``height``/``width`` may be symbolic and nothing is a constant.
    """
    ws, s = window_size, shift_size

    def regions(size):  # (n windows along the axis, ws): region 0/1/2 of every position
        pos = jnp.arange(size // ws)[:, None] * ws + jnp.arange(ws)[None, :]
        return (pos >= size - ws).astype(jnp.int32) + (pos >= size - s).astype(jnp.int32)

    rows, cols = regions(height), regions(width)
    label = (3 * rows[:, None, :, None] + cols[None, :, None, :]).reshape(-1, ws * ws)  # (nW, ws²)
    return jnp.where(label[:, None, :] != label[:, :, None], MASK_VALUE, 0.0).astype(dtype)


def overlap_window_size(window_size: int, overlap_ratio: float) -> int:
    """HAT's overlapping key/value window: ``ws + int(overlap_ratio * ws)``, widened equally on both sides.

    The official unfold pads by ``(wse - ws) // 2`` per side with stride ``ws``; an odd widening would
    give fewer key windows than query windows (the official forward then fails), so it is refused here.
    """
    overlap = window_size + int(window_size * overlap_ratio)
    if (overlap - window_size) % 2:
        raise ValueError(f"overlap_ratio={overlap_ratio} with window_size={window_size} widens the window by "
                         f"{overlap - window_size} (odd): the overlapping windows would not tile the image")
    return overlap


@functools.lru_cache(maxsize=None)
def overlapping_relative_position_index(window_size: int, overlap_size: int) -> np.ndarray:
    """(ws², wse²) index into HAT's ((ws+wse-1)², heads) OCA table, exactly the official buffer.

    Key minus query (the opposite sign to :func:`relative_position_index`); it has negative entries,
    which PyTorch indexing wraps around (``relative_position_bias`` takes them modulo the table size).
    """
    ws, wse = window_size, overlap_size

    def coords(n):
        return np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij")).reshape(2, -1)

    rel = (coords(wse)[:, None, :] - coords(ws)[:, :, None]).transpose(1, 2, 0) + (ws - wse + 1)
    return (rel[..., 0] * (ws + wse - 1) + rel[..., 1]).astype(np.int64)


def overlapping_window_partition(x: jnp.ndarray, window_size: int, overlap_size: int) -> jnp.ndarray:
    """(B, H, W, C) -> (B * nW, wse², C): one wse x wse window centred on each ws x ws window.

    Equals ``nn.Unfold(wse, stride=ws, padding=(wse - ws) // 2)`` followed by HAT's rearrange: the
    border is *zero*-padded (callers pass the projected keys/values, so padded keys are 0, not a
    projection of 0), and windows come batch-major then row-major, as :func:`to_windows`.
    Built from pads, reshapes and slices (no gather), so its gradient is a sum of slices rather
    than a scatter.
    """
    b, h, w, c = x.shape
    ws, wse = window_size, overlap_size
    x = _overlapping_blocks(x, 1, ws, wse)  # (B, nh, wse, W, C)
    x = _overlapping_blocks(x, 3, ws, wse)  # (B, nh, wse, nw, wse, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, wse * wse, c)


def _overlapping_blocks(x: jnp.ndarray, axis: int, ws: int, wse: int) -> jnp.ndarray:
    """Split ``axis`` (a multiple of ``ws``) into (n / ws, wse) overlapping, zero-padded windows.

    After padding ``pad = (wse - ws) / 2`` in front, window ``i`` is rows ``[i ws, i ws + wse)``:
    block ``i`` of the ws-row blocks followed by the first ``2 pad`` rows of block ``i + 1``.
    """
    pad = (wse - ws) // 2
    n = x.shape[axis]
    if 2 * pad > ws:  # wider than a block on each side: gather
        idx = (jnp.arange(n // ws)[:, None] * ws + jnp.arange(wse)[None]).reshape(-1)
        padding = [(0, 0)] * x.ndim
        padding[axis] = (pad, pad)
        x = jnp.take(jnp.pad(x, padding), idx, axis=axis)
        return x.reshape(*x.shape[:axis], n // ws, wse, *x.shape[axis + 1:])
    padding = [(0, 0)] * x.ndim
    padding[axis] = (pad, ws - pad)
    x = jnp.pad(x, padding)
    blocks = x.reshape(*x.shape[:axis], n // ws + 1, ws, *x.shape[axis + 1:])
    head = jax.lax.slice_in_dim(blocks, 0, n // ws, axis=axis)
    tail = jax.lax.slice_in_dim(jax.lax.slice_in_dim(blocks, 1, n // ws + 1, axis=axis), 0, 2 * pad, axis=axis + 1)
    return jnp.concatenate([head, tail], axis=axis + 1)

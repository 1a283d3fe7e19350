"""Window partitioning, relative-position indices and shifted-window masks (Swin/SwinIR/HAT/DRCT).

Everything that depends only on static shapes is computed in NumPy at trace time, so jit sees
constants; masks are always rebuilt from the actual (padded) input size, never from a stored
buffer, which is why a checkpoint trained at another ``img_size`` loads and runs unchanged.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

# The official code masks cross-region pairs with -100 (not -inf): after softmax they are ~4e-44,
# and an all-masked row stays finite.
MASK_VALUE = -100.0


def window_partition(x: jnp.ndarray, window_size: int) -> jnp.ndarray:
    """(B, H, W, C) -> (B * nW, ws * ws, C), windows batch-major then row-major (as PyTorch)."""
    b, h, w, c = x.shape
    ws = window_size
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: jnp.ndarray, window_size: int, height: int, width: int) -> jnp.ndarray:
    """Inverse of :func:`window_partition`: (B * nW, ws * ws, C) -> (B, H, W, C)."""
    ws = window_size
    c = windows.shape[-1]
    x = windows.reshape(-1, height // ws, width // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


@functools.lru_cache(maxsize=None)
def relative_position_index(window_size: int) -> np.ndarray:
    """(ws², ws²) index into the ((2ws-1)², heads) bias table; query minus key, as Swin."""
    ws = window_size
    coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (ws - 1)
    return (rel[..., 0] * (2 * ws - 1) + rel[..., 1]).astype(np.int64)


@functools.lru_cache(maxsize=None)
def shifted_window_mask(height: int, width: int, window_size: int, shift_size: int) -> np.ndarray:
    """(nW, ws², ws²) additive mask for cyclically shifted windows (SwinIR's ``calculate_mask``)."""
    ws, s = window_size, shift_size
    region = np.zeros((1, height, width, 1), np.float32)
    label = 0
    for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            region[:, hs, wsl, :] = label
            label += 1
    windows = np.asarray(window_partition(region, ws))[..., 0]  # (nW, ws²)
    diff = windows[:, None, :] - windows[:, :, None]
    return np.where(diff != 0, MASK_VALUE, 0.0).astype(np.float32)


def pad_to_multiple(x: jnp.ndarray, multiple: int, mode: str) -> jnp.ndarray:
    """Pad H and W (bottom/right) of an NHWC batch the way the official code does.

    ``"reflect"``: only when needed, to the next multiple (SwinIR's forward, HAT/DRCT/Restormer
    wrappers). ``"symmetric"``: always by ``(h // m + 1) * m - h`` with a mirror that repeats the edge
    pixel (SwinIR/DRCT test scripts, which produced the papers' numbers). ``"none"``: no padding.
    """
    h, w = x.shape[1:3]
    if mode == "reflect":
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph == pw == 0:
            return x
        if ph >= h or pw >= w:  # reflect cannot pad more than size-1; torch raises, we fall back
            return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
        return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
    if mode == "symmetric":
        ph, pw = (h // multiple + 1) * multiple - h, (w // multiple + 1) * multiple - w
        return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
    if mode == "none":
        if h % multiple or w % multiple:
            raise ValueError(f"Input size {h}x{w} is not a multiple of {multiple} and padding='none'")
        return x
    raise ValueError(f"Unknown padding {mode!r}; valid: 'reflect', 'symmetric', 'none'")


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
    projection of 0), and windows come batch-major then row-major, as :func:`window_partition`.
    """
    b, h, w, c = x.shape
    ws, wse = window_size, overlap_size
    pad = (wse - ws) // 2
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = (np.arange(h // ws)[:, None] * ws + np.arange(wse)[None]).reshape(-1)
    cols = (np.arange(w // ws)[:, None] * ws + np.arange(wse)[None]).reshape(-1)
    x = jnp.take(jnp.take(x, rows, axis=1), cols, axis=2)  # (B, nh * wse, nw * wse, C)
    x = x.reshape(b, h // ws, wse, w // ws, wse, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wse * wse, c)

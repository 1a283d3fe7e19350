"""Multi-head attention with a learned relative-position bias, over (possibly shifted) windows."""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from iln_jax.layers.basic import dense, trunc_normal_init
from iln_jax.layers.window import relative_position_index


def split_heads(x: jnp.ndarray, num_heads: int) -> jnp.ndarray:
    """(B_, N, C) -> (B_, heads, N, C / heads)."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: jnp.ndarray) -> jnp.ndarray:
    """(B_, heads, N, d) -> (B_, N, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def relative_position_bias(table: jnp.ndarray, index: np.ndarray) -> jnp.ndarray:
    """Gather a (T, heads) table with an (Nq, Nk) index -> (heads, Nq, Nk).

    Indices are taken modulo T: HAT's overlapping-window index has negative entries that PyTorch
    indexing wraps around, and the modulo reproduces exactly that (it is a bijection onto 0..T-1).
    """
    nq, nk = index.shape
    idx = np.mod(index, table.shape[0]).reshape(-1)
    return table[idx].reshape(nq, nk, -1).transpose(2, 0, 1)


def attend(q, k, v, *, bias=None, mask=None, dropout: Optional[nn.Dropout] = None):
    """softmax(q kᵀ + bias + mask) v for (B_, heads, N, d) inputs; q is already scaled.

    ``mask`` is (nW, Nq, Nk) and B_ is batch-major over windows, as in the official code.
    """
    attn = jnp.einsum("bhqd,bhkd->bhqk", q, k)
    if bias is not None:
        attn = attn + bias[None].astype(attn.dtype)
    if mask is not None:
        nw = mask.shape[0]
        b_, h, nq, nk = attn.shape
        attn = attn.reshape(b_ // nw, nw, h, nq, nk) + jnp.asarray(mask, attn.dtype)[None, :, None]
        attn = attn.reshape(b_, h, nq, nk)
    attn = jax.nn.softmax(attn, axis=-1)
    if dropout is not None:
        attn = dropout(attn)
    return jnp.einsum("bhqk,bhkd->bhqd", attn, v)


class WindowAttention(nn.Module):
    """Swin window attention (parameter names as the official ``attn`` module)."""

    dim: int
    num_heads: int
    window_size: int
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, windows: jnp.ndarray, mask: Optional[np.ndarray] = None) -> jnp.ndarray:
        ws, heads = self.window_size, self.num_heads
        head_dim = self.dim // heads
        scale = self.qk_scale or head_dim ** -0.5
        table = self.param("relative_position_bias_table", trunc_normal_init, ((2 * ws - 1) ** 2, heads))
        b_, n, _ = windows.shape
        qkv = dense(3 * self.dim, use_bias=self.qkv_bias, name="qkv")(windows)
        qkv = qkv.reshape(b_, n, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * scale, qkv[1], qkv[2]
        bias = relative_position_bias(table, relative_position_index(ws))
        out = attend(q, k, v, bias=bias, mask=mask,
                     dropout=nn.Dropout(self.attn_drop, deterministic=self.deterministic))
        out = dense(self.dim, name="proj")(merge_heads(out))
        return nn.Dropout(self.proj_drop, deterministic=self.deterministic)(out)

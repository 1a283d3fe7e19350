"""Restormer-style channel ("transposed") attention and its pieces, on NHWC feature maps.

* :class:`GDFN` and :class:`MDTA` are Restormer's feed-forward and attention (parameter names as
  the official ``ffn`` / ``attn`` modules).
* :class:`NonlinearValue` and :class:`GlobalSpatialTokens` are the two ExDA primitives ("Rethinking
  Expressivity and Degradation-Awareness in Attention for All-in-One Blind Image Restoration",
  ICLR 2026; no released code). They are options of :class:`MDTA`, off by default, so that
  every Restormer-style backbone built on it gets them.
* :class:`TransformerBlock` is the pre-norm block of Restormer and HINT, written once for every
  norm: ``x + s * attn(y)`` then ``x + s * ffn(y)`` with ``(y, s) = norm(x)``.
* :func:`bilinear_matrix` / :func:`adaptive_pool_matrix` are PyTorch's ``F.interpolate(bilinear,
  align_corners=False)`` and ``adaptive_avg_pool`` as constant matrices (shapes are static), used
  by the global tokens and by HINT's cache.

Attention tensors are ``(B, heads, channels, H*W)``: attention is between channels.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from iln_jax.layers.activations import gelu, softmax
from iln_jax.layers.basic import conv
from iln_jax.layers.norms import ModuleDef
from iln_jax.layers.rearrange import split

VALUE_TRANSFORMS = ("none", "residual", "replace")
F_NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default


def l2_normalize(x: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
    """``F.normalize``: x / max(||x||, 1e-12)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, F_NORMALIZE_EPS)


def to_heads(x: jnp.ndarray, heads: int) -> jnp.ndarray:
    """(B, H, W, C) -> (B, heads, C/heads, H*W), channel c = head * C/heads + i (einops' order)."""
    b, h, w, c = x.shape
    return x.reshape(b, h * w, heads, c // heads).transpose(0, 2, 3, 1)


def from_heads(x: jnp.ndarray, h: int, w: int) -> jnp.ndarray:
    """Inverse of :func:`to_heads`."""
    b, heads, d, _ = x.shape
    return x.transpose(0, 3, 1, 2).reshape(b, h, w, heads * d)


def channel_attention(q, k, v, temperature):
    """softmax(q̂ k̂ᵀ · temperature) v over channels; q̂, k̂ L2-normalized over space."""
    attn = jnp.einsum("...cn,...dn->...cd", l2_normalize(q), l2_normalize(k)) * temperature
    return jnp.einsum("...cd,...dn->...cn", softmax(attn, axis=-1), v)


def bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D ``F.interpolate(mode='bilinear', align_corners=False)``."""
    m = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[i, i0] += 1.0 - lam
        m[i, i1] += lam
    return m.astype(np.float32)


def adaptive_pool_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D ``adaptive_avg_pool`` (also when n_out > n_in)."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def resample_2d(x: jnp.ndarray, rows: np.ndarray, cols: np.ndarray) -> jnp.ndarray:
    """Apply separable resampling matrices to the last two axes: rows @ x @ colsᵀ."""
    return jnp.einsum("ij,...jk,lk->...il", rows, x, cols)


class GDFN(nn.Module):
    """Gated-Dconv feed-forward: 1x1 -> depthwise 3x3 -> gelu(x1) * x2 -> 1x1 (hidden int(C*f))."""

    dim: int
    ffn_expansion_factor: float
    bias: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        hidden = int(self.dim * self.ffn_expansion_factor)
        x = conv(2 * hidden, 1, name="project_in", use_bias=self.bias, dtype=self.dtype)(x)
        x = conv(2 * hidden, 3, name="dwconv", use_bias=self.bias, groups=2 * hidden, dtype=self.dtype)(x)
        x1, x2 = split(x, 2, axis=-1)
        return conv(self.dim, 1, name="project_out", use_bias=self.bias, dtype=self.dtype)(gelu(x1) * x2)


class NonlinearValue(nn.Module):
    """ExDA's value transform before aggregation: ``V + g(V)`` (or ``g(V)``, the ablation).

    ``g = 1x1 -> depthwise 3x3 -> GELU -> 1x1`` at the value's width. Aggregation by attention is a
    convex combination of value channels, so a non-linearity placed *before* it is what lets the
    output leave the span of the input channels.
    """

    residual: bool = True
    bias: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, v):
        c = v.shape[-1]
        g = conv(c, 1, name="proj_in", use_bias=self.bias, dtype=self.dtype)(v)
        g = gelu(conv(c, 3, name="dwconv", use_bias=self.bias, groups=c, dtype=self.dtype)(g))
        g = conv(c, 1, name="proj_out", use_bias=self.bias, dtype=self.dtype)(g)
        return v + g if self.residual else g


class GlobalSpatialTokens(nn.Module):
    """ExDA's Global Spatial Tokens: K content-adaptive spatial maps per head.

    AvgPool (stride s) -> 1x1 projection to heads*K maps -> softmax over the pooled positions ->
    bilinear upsampling back to HxW. Returns (B, heads, K, H*W), ready to be concatenated to the
    per-head q, k and v channels. The stride is capped at the map size so that the 1x1 latent of a
    small input still pools to at least one position.
    """

    num_heads: int
    num_tokens: int
    stride: int = 2
    bias: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, h, w, _ = x.shape
        sh, sw = min(self.stride, h), min(self.stride, w)
        pooled = nn.avg_pool(x, (sh, sw), strides=(sh, sw), padding="VALID")
        phi = conv(self.num_heads * self.num_tokens, 1, name="proj", use_bias=self.bias, dtype=self.dtype)(pooled)
        ph, pw = phi.shape[1:3]
        tokens = to_heads(phi, self.num_heads)  # (B, heads, K, ph*pw)
        tokens = softmax(tokens.astype(jnp.float32), axis=-1).astype(phi.dtype)
        tokens = tokens.reshape(b, self.num_heads, self.num_tokens, ph, pw)
        up = resample_2d(tokens, bilinear_matrix(h, ph), bilinear_matrix(w, pw))
        return up.reshape(b, self.num_heads, self.num_tokens, h * w)


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention (official ``Attention``), with the ExDA options.

    ``value_transform``: "none" (Restormer), "residual" (ExDA, ``V + g(V)``) or "replace" (``g(V)``).
    ``global_tokens`` K > 0 adds K Global Spatial Tokens per head, computed from the attention's
    input (the normalized block input): q, k and v' become ``[t ⊕ G]`` (d + K channels per head;
    q and k are L2-normalized after the concatenation, G rows included, and the per-head
    temperature scales the whole (d+K)^2 map), and after attention the K global rows are re-injected
    into the d local ones as ``local + alpha * global``, ``alpha`` a learnable scalar (init 0.1).
    The paper writes this as ``Attn[:, :, :C] + α Attn[:, :, C:]``, which is only shape-valid for
    K = 1 (broadcast) or K = d (row by row); here global token j is added to the j-th block of
    d/K consecutive channels, which is exactly those two cases and generalises to every K | d.

    The carry (HINT's cache) is passed through untouched so every attention has one signature.
    """

    dim: int
    num_heads: int
    bias: bool = False
    value_transform: str = "none"
    global_tokens: int = 0
    global_token_stride: int = 2
    global_token_alpha: float = 0.1
    dtype: Any = None

    @nn.compact
    def __call__(self, x, carry=None):
        b, h, w, c = x.shape
        heads, d, n_tok = self.num_heads, self.dim // self.num_heads, self.global_tokens
        if self.value_transform not in VALUE_TRANSFORMS:
            raise ValueError(f"Unknown value_transform {self.value_transform!r}; valid: {VALUE_TRANSFORMS}")
        if n_tok and d % n_tok:
            raise ValueError(f"global_tokens={n_tok} must divide the head width {d} (dim {c} / {heads} heads)")
        temperature = self.param("temperature", nn.initializers.ones, (heads, 1, 1))
        qkv = conv(3 * c, 1, name="qkv", use_bias=self.bias, dtype=self.dtype)(x)
        qkv = conv(3 * c, 3, name="qkv_dwconv", use_bias=self.bias, groups=3 * c, dtype=self.dtype)(qkv)
        q, k, v = split(qkv, 3, axis=-1)
        if self.value_transform != "none":
            v = NonlinearValue(self.value_transform == "residual", self.bias, self.dtype, name="value_transform")(v)
        q, k, v = (to_heads(t, heads) for t in (q, k, v))
        if n_tok:
            g = GlobalSpatialTokens(heads, n_tok, self.global_token_stride, self.bias, self.dtype,
                                    name="global_tokens")(x).astype(q.dtype)
            q, k, v = (jnp.concatenate([t, g], axis=2) for t in (q, k, v))
        out = channel_attention(q, k, v, temperature.astype(q.dtype))
        if n_tok:
            alpha = self.param("alpha", nn.initializers.constant(self.global_token_alpha), ())
            local, glob = out[:, :, :d], out[:, :, d:]
            out = local + alpha.astype(out.dtype) * jnp.repeat(glob, d // n_tok, axis=2)
        out = conv(c, 1, name="project_out", use_bias=self.bias, dtype=self.dtype)(from_heads(out, h, w))
        return out, carry


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + s·attn(norm1(x))`` (unless FFN-only) then ``x + s·ffn(norm2(x))``.

    ``attention`` is a factory ``(name=...) -> module(x, carry) -> (out, carry)`` or None for
    HINT's FFN-only encoder blocks (which, as officially, have no ``norm1``/``attn`` at all).
    ``s`` is the norm's branch scale (i-LN's per-image std, LayerScale's gamma, ReZero's alpha).
    """

    dim: int
    norm: ModuleDef
    attention: Optional[Callable[..., nn.Module]]
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, carry=None):
        if self.attention is not None:
            y, scale = self.norm(name="norm1")(x)
            y, carry = self.attention(name="attn")(y, carry)
            x = x + scale * y
        y, scale = self.norm(name="norm2")(x)
        y = GDFN(self.dim, self.ffn_expansion_factor, self.bias, self.dtype, name="ffn")(y)
        return x + scale * y, carry

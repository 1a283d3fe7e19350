"""HINT (joshyZhou/HINT): Restormer's U-Net with hierarchical multi-head attention (HMHA) and the
query-key cache update (QKCU), FFN-only encoder levels, and a 6-block (``num_blocks[1]``) latent.

HMHA ranks the channels of q by their mean correlation with the others, splits the ranked
channels into 4 groups of sizes 1:2:2:3 (x C/8) and attends within each group with its own
temperature. QKCU modulates each group's attention map with a cache of the previous layers' maps
(inter-layer) and the attention output with the groups' q̂ + k̂ (intra-layer).

Two modes (``faithful``):

* ``faithful=True`` reproduces the official forward exactly, including what it does by accident:
  the ranking comes from the **batch mean** of q (an image's output depends on the rest of the
  batch), the cache is the batch mean, its update is ``resized_map * c_i // C`` (**floor**
  division: 0 while every entry lies in [0, C/c_i), -1 where a modulated map goes negative, so
  the cache is mostly but not always zero), outputs stay in the ranked channel order, and the
  model keeps its last cache for the **next call** (the first call after construction runs
  without one). Here that state is explicit: ``qv_cache`` in, ``return_cache=True`` out; None
  is the official first call. Batch size 1 with the previous image's cache is exactly the
  official test loop.
* ``faithful=False`` (default) is the corrected design: per-image ranking, a per-image cache
  with true division (a channel-share-weighted mean of the resized maps), the output returned to
  the original channel order before the intra modulation and projection (with per-image
  rankings a fixed 1x1 projection would otherwise see a different channel order per image), and
  no state across calls (every call starts without a cache, as the official first call does).
  An image's output depends only on that image (with a per-image norm).

The ``heads`` argument is accepted (it is in the official configs) but, as officially, unused.
ExDA's options: ``value_transform`` (as Restormer) and ``global_tokens`` (Global Spatial Tokens per
HMHA channel group, see :class:`HMHA`); both off by default, i.e. the official model.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from iln_jax.layers.activations import gelu, softmax
from iln_jax.layers.basic import conv, torch_default_kernel_init
from iln_jax.layers.channel_attention import (GlobalSpatialTokens, NonlinearValue, VALUE_TRANSFORMS,
                                              adaptive_pool_matrix, bilinear_matrix, l2_normalize, resample_2d)
from iln_jax.layers.conv import Conv
from iln_jax.layers.rearrange import split
from iln_jax.models.unet_shell import ChannelAttentionUNet

GROUP_RATIOS = (1, 2, 2, 3)
CACHE_DECAY = 0.9  # cache = 0.9 * cache + 0.1 * this layer's maps


def group_sizes(channels: int) -> list[int]:
    return [int(r / sum(GROUP_RATIOS) * channels) for r in GROUP_RATIOS]


def conv1d(features: int, name: str, dtype=None) -> Conv:
    """``nn.Conv1d(..., kernel_size=1)`` (with bias) on channels-last input."""
    return Conv(features, (1,), padding=((0, 0),), use_bias=True, kernel_init=torch_default_kernel_init, name=name, dtype=dtype)


def rank_channels(q: jnp.ndarray, faithful: bool) -> jnp.ndarray:
    """(B, C, N) -> channel order (B or 1, C), by mean correlation, descending.

    Faithful: ``torch.corrcoef`` of the batch-mean q; a constant channel makes every score NaN,
    and NaN scores sort first, in index order, as torch.sort does. Corrected: per image, and a
    constant channel correlates 0 with everything (no NaN). Computed
    in float32 whatever the compute dtype, so that bfloat16 round-off does not reorder channels.
    """
    q = q.astype(jnp.promote_types(q.dtype, jnp.float32))
    x = q.mean(axis=0, keepdims=True) if faithful else q
    x = x - x.mean(axis=-1, keepdims=True)
    cov = jnp.einsum("bcn,bdn->bcd", x, x) / (x.shape[-1] - 1)
    std = jnp.sqrt(jnp.diagonal(cov, axis1=1, axis2=2))
    if not faithful:
        std = jnp.maximum(std, 1e-12)
    corr = jnp.clip(cov / std[:, :, None] / std[:, None, :], -1.0, 1.0)
    score = corr.mean(axis=-1)
    key = jnp.where(jnp.isnan(score), -jnp.inf, -score)
    return jnp.argsort(key, axis=-1)


def take_channels(x: jnp.ndarray, order: jnp.ndarray) -> jnp.ndarray:
    """Reorder axis 1 of (B, C, N) by a (B or 1, C) order."""
    order = jnp.broadcast_to(order, x.shape[:2])
    return jnp.take_along_axis(x, order[:, :, None], axis=1)


def layer_cache(attns: list[jnp.ndarray], channels: int, faithful: bool) -> jnp.ndarray:
    """This layer's cache: each group's map resized (bilinearly) to (C, C), weighted by c_i / C."""
    total = 0.0
    for attn in attns:
        attn = jax.lax.stop_gradient(attn)
        if faithful:
            attn = attn.mean(axis=0, keepdims=True)
        size = attn.shape[-1]
        up = resample_2d(attn, bilinear_matrix(channels, size), bilinear_matrix(channels, size))
        total = total + (jnp.floor_divide(up * size, channels) if faithful else up * size / channels)
    return total


def pool_cache(cache: jnp.ndarray, size: int) -> jnp.ndarray:
    """``adaptive_avg_pool2d(cache, size)`` on (B, C', C')."""
    if cache.shape[-1] == size:
        return cache
    m = adaptive_pool_matrix(size, cache.shape[-1])
    return resample_2d(cache, m, m)


class InterCacheModulation(nn.Module):
    """Official ``Inter_CacheModulation``: the cache (pooled to the group size) conditions a
    scale/shift of the attention map, gated by GELU. Conv1d channels are the map's rows."""

    in_c: int
    dtype: Any = None

    @nn.compact
    def __call__(self, attn, cache):
        rows = lambda f, t: jnp.swapaxes(f(jnp.swapaxes(t, 1, 2)), 1, 2)  # Conv1d over axis 1
        z = pool_cache(cache, self.in_c).astype(attn.dtype) + attn
        scale, shift = split(rows(conv1d(2 * self.in_c, "conv_width", self.dtype), z), 2, axis=1)
        y = attn * scale + shift
        return y * gelu(rows(conv1d(self.in_c, "gatingConv", self.dtype), y))


class IntraCacheModulation(nn.Module):
    """Official ``Intra_CacheModulation`` on channels-last (B, N, C): gated, then a C/2 bottleneck."""

    dim: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x1, x2):
        s = x1 + x2
        gated = gelu(conv1d(self.dim, "gatingConv", self.dtype)(s)) * s
        return conv1d(self.dim, "up", self.dtype)(conv1d(self.dim // 2, "down", self.dtype)(gated))


class HMHA(nn.Module):
    """HINT's ``Attention``: ranked channel groups of sizes 1:2:2:3, per-group temperature, QKCU.

    ``global_tokens`` K > 0 adds ExDA's Global Spatial Tokens, K per channel group (the groups are
    HMHA's heads: each has its own temperature and attention map). As in Restormer's MDTA, the
    tokens are computed from the attention's input and appended to the group's (ranked) q, k and v
    channels; the group's (c_g + K)^2 map is softmaxed with the group's temperature; after
    aggregation global token j is added, times the learnable scalar ``alpha``, to the j-th block of
    c_g / K local channels. QKCU sees the local part only: the inter-layer modulation acts on the
    local c_g x c_g block of each map (its Conv1d widths stay the official ones), the cache is built
    from those blocks, and the intra-layer modulation uses the local q̂ + k̂. K must divide C / 8 (every
    group size).
    """

    dim: int
    bias: bool = False
    faithful: bool = False
    dtype: Any = None
    value_transform: str = "none"  # ExDA's non-linear value (see channel_attention.NonlinearValue)
    global_tokens: int = 0
    global_token_stride: int = 2
    global_token_alpha: float = 0.1

    def _attend_groups(self, q, k, v, temperature, tokens):
        """Per group: (full map, local c_g x c_g block, values with the group's tokens); and q̂ + k̂."""
        maps, local, values, qk, start = [], [], [], [], 0
        for i, size in enumerate(group_sizes(q.shape[1])):
            qg, kg, vg = (t[:, start:start + size] for t in (q, k, v))
            qh, kh = l2_normalize(qg), l2_normalize(kg)
            qk.append(jax.lax.stop_gradient(qh + kh))
            if tokens is not None:  # the L2 norm is per channel row: appending rows leaves qh, kh as they are
                g = l2_normalize(tokens[:, i])
                qh, kh = jnp.concatenate([qh, g], axis=1), jnp.concatenate([kh, g], axis=1)
                vg = jnp.concatenate([vg, tokens[:, i]], axis=1)
            attn = softmax(jnp.einsum("bcn,bdn->bcd", qh, kh) * temperature[i], axis=-1)
            maps.append(attn)
            local.append(attn[:, :size, :size])
            values.append(vg)
            start += size
        return maps, local, values, jnp.concatenate(qk, axis=1)

    @nn.compact
    def __call__(self, x, cache: Optional[jnp.ndarray] = None):
        b, h, w, c = x.shape
        if c % 8:
            raise ValueError(f"HMHA needs a width divisible by 8 (groups of 1:2:2:3 eighths); got {c}")
        n_tok = self.global_tokens
        if n_tok and (c // 8) % n_tok:
            raise ValueError(f"global_tokens={n_tok} must divide every HMHA channel group "
                             f"(sizes {group_sizes(c)} at width {c}: K must divide {c // 8})")
        temperature = self.param("temperature", nn.initializers.ones, (len(GROUP_RATIOS), 1, 1))
        qkv = conv(3 * c, 1, name="qkv", use_bias=self.bias, dtype=self.dtype)(x)
        qkv = conv(3 * c, 3, name="qkv_dwconv", use_bias=self.bias, groups=3 * c, dtype=self.dtype)(qkv)
        q, k, v = split(qkv, 3, axis=-1)
        if self.value_transform not in VALUE_TRANSFORMS:
            raise ValueError(f"Unknown value_transform {self.value_transform!r}; valid: {VALUE_TRANSFORMS}")
        if self.value_transform != "none":
            v = NonlinearValue(self.value_transform == "residual", self.bias, self.dtype, name="value_transform")(v)
        q, k, v = (t.reshape(b, h * w, c).transpose(0, 2, 1) for t in (q, k, v))
        order = rank_channels(q, self.faithful)
        q, k, v = (take_channels(t, order) for t in (q, k, v))
        tokens = None
        if n_tok:
            tokens = GlobalSpatialTokens(len(GROUP_RATIOS), n_tok, self.global_token_stride, self.bias, self.dtype,
                                         name="global_tokens")(x).astype(q.dtype)  # (B, groups, K, N)
        maps, attns, values, qk = self._attend_groups(q, k, v, temperature.astype(q.dtype), tokens)

        modulators = [InterCacheModulation(r * c // 8, self.dtype, name=f"inter_modulator{i + 1}")
                      for i, r in enumerate(GROUP_RATIOS)]
        if cache is not None:
            cache = pool_cache(cache, c)
            attns = [m(a, cache) + a for m, a in zip(modulators, attns)]
        elif self.is_initializing():  # create the parameters the cache-less path does not use
            for m, a in zip(modulators, attns):
                m(a, jnp.zeros((1, c, c), a.dtype))
        update = layer_cache(attns, c, self.faithful)
        cache = CACHE_DECAY * update if cache is None else CACHE_DECAY * cache + (1 - CACHE_DECAY) * update

        alpha = self.param("alpha", nn.initializers.constant(self.global_token_alpha), ()) if n_tok else None
        out = []
        for full, attn, vg, size in zip(maps, attns, values, group_sizes(c)):
            if n_tok:
                full = full.at[:, :size, :size].set(attn)  # the modulated local block
                og = jnp.einsum("bcd,bdn->bcn", full, vg)
                og = og[:, :size] + alpha.astype(og.dtype) * jnp.repeat(og[:, size:], size // n_tok, axis=1)
            else:
                og = jnp.einsum("bcd,bdn->bcn", attn, vg)
            out.append(og)
        out = jnp.concatenate(out, axis=1)
        if not self.faithful:  # back to the original channel order
            inverse = jnp.argsort(order, axis=-1)
            out, qk = take_channels(out, inverse), take_channels(qk, inverse)
        out, qk = out.transpose(0, 2, 1), qk.transpose(0, 2, 1)  # (B, N, C)
        out = IntraCacheModulation(c, self.dtype, name="intra_modulator")(out, qk) + out
        out = conv(c, 1, name="project_out", use_bias=self.bias, dtype=self.dtype)(out.reshape(b, h, w, c))
        return out, cache


class HINT(ChannelAttentionUNet):
    """Official fields and defaults; ``faithful`` selects the official or the corrected HMHA/QKCU."""

    faithful: bool = False
    # ExDA's Global Spatial Tokens per HMHA channel group (0: off); see HMHA.
    global_tokens: int = 0
    global_token_stride: int = 2
    global_token_alpha: float = 0.1

    carries_cache: ClassVar[bool] = True

    def prepare_carry(self, carry, dim):
        return None if carry is None else pool_cache(carry, dim)  # what HMHA does first with it

    def level_row(self, level):
        return 1 if level == "latent" else super().level_row(level)  # official: num_blocks[1], heads[1]

    def attention(self, level, dim, heads):
        if level.startswith("encoder_level"):
            return None  # official isAtt=False: FFN-only blocks
        return functools.partial(HMHA, dim, self.bias, self.faithful, self.dtype, self.value_transform_at(level),
                                 self.global_tokens, self.global_token_stride, self.global_token_alpha)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False, qv_cache: Optional[jnp.ndarray] = None,
                 return_cache: bool = False):
        """``qv_cache``/``return_cache``: the official module's hidden state, made explicit
        (faithful mode only): None is the first call after construction; pass the cache a
        previous call returned to reproduce a later call."""
        if qv_cache is not None:
            if not self.faithful:
                raise ValueError("qv_cache is the official model's state across calls; the corrected "
                                 "HINT (faithful=False) keeps none. Use faithful=True to pass one.")
            qv_cache = jnp.asarray(qv_cache).reshape((1,) + jnp.shape(qv_cache)[-2:])
        out, cache = self._unet(x, train=train, carry=qv_cache)
        return (out, cache) if return_cache else out

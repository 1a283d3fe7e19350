"""DRCT (Hsu et al., 2024): residual dense groups of Swin blocks (RDG) in the shared SR shell.

Each RDG is a dense block whose "layers" are the shared :class:`SwinBlock`: block k sees the
group input concatenated with the ``gc``-channel outputs of blocks 1..k-1 (made by 1x1 ``adjust``
convs), so its width is ``dim + (k-1)*gc`` and its head count ``num_heads - width % num_heads``
(the official rule, which keeps the width divisible). ``depths`` only sets the number of RDGs and
the drop-path schedule, as officially: every RDG has five blocks, all with the group's first rate.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from iln_jax.layers.basic import conv, leaky_relu
from iln_jax.layers.norm_registry import NormSpec
from iln_jax.layers.swin import SwinBlock, effective_window
from iln_jax.models import stacking
from iln_jax.models.sr_shell import SRTransformer

RDG_BLOCKS = 5
GROWTH_SLOPE = 0.2  # LeakyReLU after adjust1..4 (adjust5 has none)
RESIDUAL_SCALE = 0.2  # RDG output: 0.2 * x5 + x


def rdg_block_geometry(k: int, dim: int, num_heads: int, gc: int, window_size: int, img_size: int,
                       mlp_ratio: float):
    """(width, heads, window, shift, mlp_ratio) of block ``swin{k}``, k = 1..5 (shift on even k)."""
    width = dim + (k - 1) * gc
    heads = num_heads if k == 1 else num_heads - width % num_heads
    if width % heads:
        raise ValueError(f"DRCT block swin{k}: width {width} is not divisible by its {heads} heads "
                         f"(embed_dim={dim}, num_heads={num_heads}, gc={gc})")
    ws, shift = effective_window(img_size, window_size, 0 if k % 2 else window_size // 2)
    return width, heads, ws, shift, (1.0 if k > 3 else mlp_ratio)


class RDG(nn.Module):
    """Residual dense group: ``x_k = adjust_k(swin_k(cat(x, x_1..x_{k-1})))``; returns ``0.2 x_5 + x``."""

    dim: int
    num_heads: int
    window_size: int
    img_size: int
    gc: int
    mlp_ratio: float
    block: Callable[..., nn.Module]  # SwinBlock factory (norm, dropout, remat, ...)

    def _swin(self, k: int, features: list, rate):
        width, heads, ws, shift, mlp_ratio = rdg_block_geometry(
            k, self.dim, self.num_heads, self.gc, self.window_size, self.img_size, self.mlp_ratio)
        block = self.block(dim=width, num_heads=heads, window_size=ws, shift_size=shift, mlp_ratio=mlp_ratio,
                           drop_path=rate, name=f"swin{k}")
        return block(jnp.concatenate(features, axis=-1))

    @nn.compact
    def __call__(self, x, rates=None):
        rate = stacking.rate_at(rates, 0)  # every block of a group takes the group's first rate, as officially
        features = [x]
        for k in range(1, RDG_BLOCKS):
            y = conv(self.gc, 1, name=f"adjust{k}")(self._swin(k, features, rate))
            features.append(leaky_relu(y, GROWTH_SLOPE))
        last = conv(self.dim, 1, name=f"adjust{RDG_BLOCKS}")(self._swin(RDG_BLOCKS, features, rate))
        return last * RESIDUAL_SCALE + x


class DRCT(SRTransformer):
    """Field names and defaults are the official ``DRCT`` constructor's (plus the shell's additions)."""

    gc: int = 32
    # Accepted because the official constructor and configs pass them; DRCT does not use them.
    compress_ratio: int = 3
    squeeze_factor: int = 30
    conv_scale: float = 0.01
    overlap_ratio: float = 0.5

    def groups_are_identical(self) -> bool:
        return len(set(self.num_heads)) == 1  # ``depths`` only counts the groups (five blocks each)

    def residual_group(self, index, norm: NormSpec, deterministic, name):
        block = self.block(SwinBlock, norm=norm.branch, qkv_bias=self.qkv_bias, qk_scale=self.qk_scale,
                           drop=self.drop_rate, attn_drop=self.attn_drop_rate, deterministic=deterministic,
                           attention_impl=self.attention_impl)
        return RDG(self.embed_dim, self.num_heads[index], self.window_size, self.img_size, self.gc,
                   self.mlp_ratio, block, name=name)

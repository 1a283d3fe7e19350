"""HAT (Chen et al., 2023): hybrid attention groups (RHAG) in the shared SR shell.

Only what is unique to HAT lives here: the channel-attention block CAB, the Swin block with a CAB
beside its attention (HAB), the overlapping cross-attention block (OCAB), and the groups.

With ``norm="iln"`` this *is* the official i-LN HAT (2minkyulee/i-LN ``HAT_iLN``): its HAB adds
``norm1.denorm(attn + conv_scale * cab)`` and ``norm2.denorm(mlp)``, its OCAB rescales both
branches, and its patch/final norms are a plain affine -- exactly what the norm interface gives
(``x + s * branch(y)`` with ``s`` the per-image std, ``outer`` = Affine). The converter's
``hat_iln`` spec only renames ``scale``/``bias`` to ``gamma``/``beta`` and turns ``stdnorm`` on.

Official behaviour kept: HAB windows follow SwinIR's rule (a training ``img_size`` equal to the
window disables the shift); OCAB keys/values are the projected features, zero-padded, with no
mask; its relative-position index wraps around negative entries. Departures: the official HAT
only builds the ``'pixelshuffle'`` head (other upsamplers leave it without a reconstruction) and
``resi_connection`` '1conv'/'identity'; here every head and '3conv' of the shell work, but only
the official combinations have official checkpoints.
"""
from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn

from iln_jax.layers.attention import attend, relative_position_bias
from iln_jax.layers.activations import gelu
from iln_jax.layers.basic import Mlp, conv, dense, trunc_normal_init
from iln_jax.layers.norm_registry import NormSpec
from iln_jax.layers.norms import ModuleDef
from iln_jax.layers.rearrange import split, unstack
from iln_jax.layers.squeeze_excitation import ChannelAttention
from iln_jax.layers.swin import SwinBlock
from iln_jax.layers.window import (from_windows, overlap_window_size, overlapping_relative_position_index,
                                   overlapping_window_partition, to_windows)
from iln_jax.models import stacking
from iln_jax.models.sr_shell import SRTransformer, residual_conv


class CAB(nn.Module):
    """Channel attention block: conv3x3 (C -> C/compress) -> GELU -> conv3x3 -> channel attention."""

    compress_ratio: int
    squeeze_factor: int

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        y = gelu(conv(channels // self.compress_ratio, 3, name="cab_0")(x))
        y = conv(channels, 3, name="cab_2")(y)
        return ChannelAttention(self.squeeze_factor, name="cab_3")(y)


class HAB(SwinBlock):
    """Hybrid attention block: a Swin block whose attention update also carries ``conv_scale * CAB``.

    The CAB sees the same normalized map as the attention, and the branch scale (i-LN's std)
    multiplies their sum; drop-path applies to the attention part only, as in the official code.
    """

    compress_ratio: int = 3
    squeeze_factor: int = 30
    conv_scale: float = 0.01

    def _attention_update(self, y):
        cab = CAB(self.compress_ratio, self.squeeze_factor, name="conv_block")(y)
        return super()._attention_update(y) + cab * self.conv_scale


class OCAB(nn.Module):
    """Overlapping cross-attention: queries from ws x ws windows, keys/values from the wse x wse
    windows centred on them (wse = ws + int(overlap_ratio * ws)); then an MLP. No drop-path."""

    dim: int
    num_heads: int
    window_size: int
    overlap_ratio: float
    norm: ModuleDef
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    attention_impl: str = "xla"

    @nn.compact
    def __call__(self, x):
        ws, heads = self.window_size, self.num_heads
        wse = overlap_window_size(ws, self.overlap_ratio)
        scale = self.qk_scale or (self.dim // heads) ** -0.5
        table = self.param("relative_position_bias_table", trunc_normal_init, ((ws + wse - 1) ** 2, heads))
        b, h, w, _ = x.shape

        y, branch_scale = self.norm(name="norm1")(x)
        q, kv = split(dense(3 * self.dim, use_bias=self.qkv_bias, name="qkv")(y), [self.dim], axis=-1)
        q = to_windows(q, ws).reshape(b, -1, ws * ws, heads, self.dim // heads)
        kv = overlapping_window_partition(kv, ws, wse).reshape(b, -1, wse * wse, 2, heads, self.dim // heads)
        bias = relative_position_bias(table, overlapping_relative_position_index(ws, wse))
        k, v = unstack(kv, axis=3)
        out = attend(q, k, v, bias=bias, scale=scale, impl=self.attention_impl)
        out = from_windows(out.reshape(*out.shape[:3], self.dim), ws, h, w)
        x = x + branch_scale * dense(self.dim, name="proj")(out)

        y, branch_scale = self.norm(name="norm2")(x)
        return x + branch_scale * Mlp(int(self.dim * self.mlp_ratio), name="mlp")(y)


class AttenBlocks(nn.Module):
    """``depth`` HABs (shift 0 and window/2 alternately), then one OCAB."""

    depth: int
    window_size: int
    img_size: int
    block: Callable[..., nn.Module]  # HAB factory
    ocab: Callable[..., nn.Module]
    scanned: bool = False

    @nn.compact
    def __call__(self, x, rates=None):
        x = stacking.alternating_blocks(self.block, x, depth=self.depth, window_size=self.window_size,
                                        img_size=self.img_size, rates=rates, scanned=self.scanned)
        return self.ocab(name="overlap_attn")(x)


class RHAG(AttenBlocks):
    """Residual hybrid attention group: ``x + conv(AttenBlocks(x))`` (same fields, plus the conv)."""

    dim: int = 0
    resi_connection: str = "1conv"

    @nn.compact
    def __call__(self, x, rates=None):
        group = AttenBlocks(self.depth, self.window_size, self.img_size, self.block, self.ocab, self.scanned,
                            name="residual_group")
        return x + residual_conv(group(x, rates), self.resi_connection, self.dim, "conv")


class HAT(SRTransformer):
    """Field names and defaults are the official ``HAT`` constructor's (plus the shell's additions)."""

    compress_ratio: int = 3
    squeeze_factor: int = 30
    conv_scale: float = 0.01
    overlap_ratio: float = 0.5

    def _validate(self, x):
        super()._validate(x)
        if self.img_size < self.window_size:
            # The official HAB shrinks its window to img_size but indexes its bias table with the
            # model-level (window_size) index, so such a model cannot run there either.
            raise ValueError(f"HAT needs img_size >= window_size; got {self.img_size} < {self.window_size}")
        overlap_window_size(self.window_size, self.overlap_ratio)  # raises before tracing the blocks

    def residual_group(self, index, norm: NormSpec, deterministic, name):
        heads = self.num_heads[index]
        common = dict(norm=norm.branch, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, qk_scale=self.qk_scale,
                      attention_impl=self.attention_impl)
        hab = self.block(HAB, dim=self.embed_dim, num_heads=heads, drop=self.drop_rate,
                         attn_drop=self.attn_drop_rate, deterministic=deterministic,
                         compress_ratio=self.compress_ratio, squeeze_factor=self.squeeze_factor,
                         conv_scale=self.conv_scale, **common)
        ocab = self.block(OCAB, dim=self.embed_dim, num_heads=heads, window_size=self.window_size,
                          overlap_ratio=self.overlap_ratio, **common)
        return RHAG(self.depths[index], self.window_size, self.img_size, hab, ocab, self.scan_layers,
                    dim=self.embed_dim, resi_connection=self.resi_connection, name=name)

    def block_scan_path(self, path, group):
        if path[:1] != ("residual_group",):
            return path, ()
        rest, index = stacking.scanned_block_path(path[1:], self.depths[group])
        return ("residual_group", *rest), index

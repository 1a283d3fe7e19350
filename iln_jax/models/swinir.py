"""SwinIR (Liang et al., 2021): residual Swin transformer blocks (RSTB) in the shared SR shell."""
from __future__ import annotations

from typing import Callable

import flax.linen as nn

from iln_jax.layers.swin import SwinBlock
from iln_jax.models import stacking
from iln_jax.models.sr_shell import SRTransformer, residual_conv


class BasicLayer(nn.Module):
    """A stack of Swin blocks, shift 0 for even and window/2 for odd blocks."""

    depth: int
    window_size: int
    img_size: int
    block: Callable[..., nn.Module]
    scanned: bool = False

    @nn.compact
    def __call__(self, x, rates=None):
        return stacking.alternating_blocks(self.block, x, depth=self.depth, window_size=self.window_size,
                                           img_size=self.img_size, rates=rates, scanned=self.scanned)


class RSTB(nn.Module):
    """Residual Swin Transformer Block: ``x + conv(blocks(x))``."""

    dim: int
    depth: int
    window_size: int
    img_size: int
    block: Callable[..., nn.Module]
    scanned: bool = False
    resi_connection: str = "1conv"

    @nn.compact
    def __call__(self, x, rates=None):
        layer = BasicLayer(self.depth, self.window_size, self.img_size, self.block, self.scanned,
                           name="residual_group")
        return x + residual_conv(layer(x, rates), self.resi_connection, self.dim, "conv")


class SwinIR(SRTransformer):
    def residual_group(self, index, norm, deterministic, name):
        block = self.block(SwinBlock, dim=self.embed_dim, num_heads=self.num_heads[index], norm=norm.branch,
                           mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, qk_scale=self.qk_scale,
                           drop=self.drop_rate, attn_drop=self.attn_drop_rate, deterministic=deterministic,
                           attention_impl=self.attention_impl)
        return RSTB(self.embed_dim, self.depths[index], self.window_size, self.img_size, block, self.scan_layers,
                    resi_connection=self.resi_connection, name=name)

    def block_scan_path(self, path, group):
        if path[:1] != ("residual_group",):
            return path, ()
        rest, index = stacking.scanned_block_path(path[1:], self.depths[group])
        return ("residual_group", *rest), index

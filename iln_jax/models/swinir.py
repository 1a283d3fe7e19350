"""SwinIR (Liang et al., 2021): residual Swin transformer blocks (RSTB) in the shared SR shell."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from iln_jax.layers.norms import NormSpec
from iln_jax.layers.swin import SwinBlock, effective_window
from iln_jax.models.sr_shell import SRTransformer, residual_conv


class BasicLayer(nn.Module):
    """A stack of Swin blocks, shift 0 for even and window/2 for odd blocks."""

    dim: int
    depth: int
    num_heads: int
    window_size: int
    block_kwargs: dict
    drop_path: Sequence[float]
    img_size: int

    @nn.compact
    def __call__(self, x):
        for j in range(self.depth):
            ws, shift = effective_window(self.img_size, self.window_size, 0 if j % 2 == 0 else self.window_size // 2)
            x = SwinBlock(self.dim, self.num_heads, ws, shift, drop_path=self.drop_path[j],
                          name=f"blocks_{j}", **self.block_kwargs)(x)
        return x


class RSTB(BasicLayer):
    """Residual Swin Transformer Block: ``x + conv(blocks(x))``."""

    resi_connection: str = "1conv"

    @nn.compact
    def __call__(self, x):
        layer = BasicLayer(self.dim, self.depth, self.num_heads, self.window_size, self.block_kwargs,
                           self.drop_path, self.img_size, name="residual_group")
        return x + residual_conv(layer(x), self.resi_connection, self.dim, "conv")


class SwinIR(SRTransformer):
    def block_kwargs(self, norm: NormSpec, deterministic: bool) -> dict:
        return dict(norm=norm.branch, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, qk_scale=self.qk_scale,
                    drop=self.drop_rate, attn_drop=self.attn_drop_rate, deterministic=deterministic,
                    attention_impl=self.attention_impl)

    def residual_group(self, index, norm, drop_path, deterministic):
        rstb = nn.remat(RSTB) if self.use_checkpoint else RSTB
        return rstb(self.embed_dim, self.depths[index], self.num_heads[index], self.window_size,
                    self.block_kwargs(norm, deterministic), tuple(drop_path), self.img_size,
                    resi_connection=self.resi_connection, name=f"layers_{index}")

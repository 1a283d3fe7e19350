"""The Swin transformer block with a pluggable norm (SwinIR's ``SwinTransformerBlock``).

Works on NHWC feature maps. The norm sees the whole image before the window partition and its
branch scale multiplies the attention and MLP outputs (i-LN's rescale; 1 for LayerNorm).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from iln_jax.layers.attention import WindowAttention
from iln_jax.layers.basic import DropPath, Mlp
from iln_jax.layers.norms import ModuleDef
from iln_jax.layers.window import shifted_window_mask, window_partition, window_reverse


def shifted_window_attention(attn: nn.Module, x: jnp.ndarray, window_size: int, shift_size: int):
    """Run a window-attention module over (cyclically shifted) windows of an NHWC map."""
    b, h, w, c = x.shape
    mask = None
    if shift_size > 0:
        x = jnp.roll(x, (-shift_size, -shift_size), axis=(1, 2))
        mask = shifted_window_mask(h, w, window_size, shift_size)
    out = window_reverse(attn(window_partition(x, window_size), mask), window_size, h, w)
    if shift_size > 0:
        out = jnp.roll(out, (shift_size, shift_size), axis=(1, 2))
    return out


def effective_window(img_size: int, window_size: int, shift_size: int) -> tuple[int, int]:
    """SwinIR shrinks the window and drops the shift when the training size fits in one window."""
    if img_size <= window_size:
        return img_size, 0
    return window_size, shift_size


class SwinBlock(nn.Module):
    dim: int
    num_heads: int
    window_size: int
    shift_size: int
    norm: ModuleDef
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    deterministic: bool = True

    def _attention_update(self, y: jnp.ndarray) -> jnp.ndarray:
        """What the attention half adds, before the branch scale; HAT's HAB adds its CAB here."""
        attn = WindowAttention(self.dim, self.num_heads, self.window_size, self.qkv_bias, self.qk_scale,
                               self.attn_drop, self.drop, self.deterministic, name="attn")
        y = shifted_window_attention(attn, y, self.window_size, self.shift_size)
        return DropPath(self.drop_path, self.deterministic)(y)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        det = self.deterministic
        y, scale = self.norm(name="norm1")(x)
        x = x + scale * self._attention_update(y)
        y, scale = self.norm(name="norm2")(x)
        y = Mlp(int(self.dim * self.mlp_ratio), drop=self.drop, deterministic=det, name="mlp")(y)
        return x + scale * DropPath(self.drop_path, det)(y)

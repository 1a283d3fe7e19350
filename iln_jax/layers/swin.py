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
    attention_impl: str = "xla"

    def _attention_update(self, y: jnp.ndarray) -> jnp.ndarray:
        """What the attention half adds, before the branch scale; HAT's HAB adds its CAB here."""
        y = WindowAttention(self.dim, self.num_heads, self.window_size, self.shift_size, self.qkv_bias,
                            self.qk_scale, self.attn_drop, self.drop, self.deterministic, self.attention_impl,
                            name="attn")(y)
        return DropPath(self.drop_path, self.deterministic)(y)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        det = self.deterministic
        y, scale = self.norm(name="norm1")(x)
        x = x + scale * self._attention_update(y)
        y, scale = self.norm(name="norm2")(x)
        y = Mlp(int(self.dim * self.mlp_ratio), drop=self.drop, deterministic=det, name="mlp")(y)
        return x + scale * DropPath(self.drop_path, det)(y)

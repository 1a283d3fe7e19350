"""RCAN's channel attention (squeeze-and-excitation gating), as HAT's CAB uses it.

Not to be confused with Restormer's transposed "channel attention" (``channel_attention.py``):
this one only gates channels with a per-image weight. Parameter names follow the official
``nn.Sequential``: the two 1x1 convs are ``attention_1`` and ``attention_3`` (pool, ReLU and
sigmoid hold no weights), so a converter maps them by name.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from iln_jax.layers.basic import conv


class ChannelAttention(nn.Module):
    """``x * sigmoid(conv1x1(relu(conv1x1(mean_hw(x)))))`` on an NHWC map."""

    squeeze_factor: int = 16

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        channels = x.shape[-1]
        y = jnp.mean(x, axis=(1, 2), keepdims=True)  # AdaptiveAvgPool2d(1)
        y = jax.nn.relu(conv(channels // self.squeeze_factor, 1, name="attention_1")(y))
        return x * jax.nn.sigmoid(conv(channels, 1, name="attention_3")(y))

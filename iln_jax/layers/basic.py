"""Small building blocks shared by every backbone: PyTorch-initialised Conv/Dense, MLP, DropPath,
pixel (un)shuffle with PyTorch's channel order, and the exact GELU the official models use."""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from iln_jax.layers.activations import gelu
from iln_jax.layers.conv import Conv
from iln_jax.layers.linear import Linear


# PyTorch's default Conv/Linear init (kaiming_uniform with a=sqrt(5)) is U(±1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# The Swin family re-initialises every Linear with trunc_normal(std=0.02) and zero bias.
trunc_normal_init = nn.initializers.truncated_normal(stddev=0.02)


def conv(features: int, kernel_size: int = 3, *, name: str, use_bias: bool = True,
         groups: int = 1, dtype=None) -> Conv:
    """A stride-1 'same' conv as ``nn.Conv2d(..., k, 1, k // 2)``; NHWC, HWIO kernel."""
    pad = kernel_size // 2
    return Conv(features, (kernel_size, kernel_size), padding=((pad, pad), (pad, pad)),
                   use_bias=use_bias, feature_group_count=groups, kernel_init=torch_default_kernel_init,
                   name=name, dtype=dtype)


def dense(features: int, *, name: str, use_bias: bool = True, dtype=None) -> Linear:
    """A Swin-family ``nn.Linear``: trunc-normal kernel, zero bias."""
    return Linear(features, use_bias=use_bias, kernel_init=trunc_normal_init, name=name, dtype=dtype)


def pixel_shuffle(x: jnp.ndarray, r: int) -> jnp.ndarray:
    """(B, H, W, C·r²) -> (B, H·r, W·r, C); input channel c·r² + i·r + j goes to (h·r+i, w·r+j)."""
    b, h, w, c = x.shape
    oc = c // (r * r)
    x = x.reshape(b, h, w, oc, r, r).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * r, w * r, oc)


def pixel_unshuffle(x: jnp.ndarray, r: int) -> jnp.ndarray:
    """Inverse of :func:`pixel_shuffle`: (B, H·r, W·r, C) -> (B, H, W, C·r²)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // r, r, w // r, r, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, h // r, w // r, c * r * r)


def leaky_relu(x, slope: float):
    return jnp.where(x >= 0, x, slope * x)


class DropPath(nn.Module):
    """Stochastic depth per sample (rng stream 'dropout'); identity when deterministic.

    ``rate`` may be a traced scalar (a scanned layer's own rate); None or a Python 0 costs nothing.
    """

    rate: Optional[float] = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, x):
        if self.deterministic or self.rate is None or (isinstance(self.rate, (int, float)) and self.rate == 0.0):
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        # A multiply by the (B,1,..) mask fuses into the producer; a select materialised full-size broadcasts.
        return (x / keep) * mask.astype(x.dtype)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout (the Swin MLP)."""

    hidden_features: int
    out_features: Optional[int] = None
    drop: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, x):
        out = self.out_features or x.shape[-1]
        x = gelu(dense(self.hidden_features, name="fc1")(x))
        x = nn.Dropout(self.drop, deterministic=self.deterministic)(x)
        x = dense(out, name="fc2")(x)
        return nn.Dropout(self.drop, deterministic=self.deterministic)(x)

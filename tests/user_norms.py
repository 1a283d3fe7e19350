"""Norms written the way a user writes them, outside the package (``norm="user_norms:..."``).

* ``RunningRMSNorm``: stateful -- it declares ``train`` and ``axis_name`` fields, keeps a running
  mean square per channel in its own collection ``norm_stats`` (not ``batch_stats``) and has a
  learnable per-channel branch scale, so it exercises every part of the open norm API.
* ``holistic_rms``: a parameter-free function ``f(x) -> (y, branch_scale)``.
* ``SCALED``: a ``NormSpec`` with different branch and outer norms.
* ``NOT_A_NORM``: for the error message.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from iln_jax.layers.norm_registry import NormSpec
from iln_jax.layers.norms import Affine


class RunningRMSNorm(nn.Module):
    train: bool = False
    axis_name: Optional[str] = None
    momentum: float = 0.9
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        ms = self.variable("norm_stats", "ms", lambda: jnp.ones((channels,), jnp.float32))
        if self.train:
            batch_ms = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=tuple(range(x.ndim - 1)))
            if self.axis_name is not None:
                batch_ms = jax.lax.pmean(batch_ms, self.axis_name)
            if not self.is_initializing():
                ms.value = self.momentum * ms.value + (1 - self.momentum) * batch_ms
        else:
            batch_ms = ms.value
        y = x / jnp.sqrt(batch_ms + self.eps).astype(x.dtype)
        gamma = self.param("gamma", nn.initializers.ones, (channels,))
        branch = self.param("branch_gain", nn.initializers.constant(0.5), (channels,))
        return y * gamma.astype(x.dtype), branch.astype(x.dtype)


def holistic_rms(x):
    ms = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=tuple(range(1, x.ndim)), keepdims=True)
    rms = jnp.sqrt(ms + 1e-4).astype(x.dtype)
    return x / rms, rms


SCALED = NormSpec("scaled", branch=RunningRMSNorm, outer=Affine)

NOT_A_NORM = 42

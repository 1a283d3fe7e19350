"""GELU and softmax with the gradients PyTorch keeps memory for: one saved tensor each.

Autodiff of ``x/2 · (1 + erf(x/√2))`` keeps three full-size intermediates for the backward pass
(``x/2``, ``1 + erf``, the ``exp`` of erf's derivative), and of ``jax.nn.softmax`` two (the
exponentials and the probabilities). PyTorch keeps GELU's input and softmax's output only. In a
full-size model these residuals are most of the activation memory: HAT x4 at 4 x 64² keeps two
(4, 16, 6, 256, 256) float32 tensors per attention (96 MiB each) and four (4, 64², 360) per MLP.
Here each keeps the one tensor PyTorch keeps and recomputes the rest in the backward pass; the
forward values are unchanged and the gradients equal autodiff's to float32 round-off.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_SQRT_HALF = 1 / np.sqrt(2)
_INV_SQRT_2PI = 1 / np.sqrt(2 * np.pi)


def _gelu(x):
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(_SQRT_HALF, x.dtype)))


@jax.custom_vjp
def gelu(x: jnp.ndarray) -> jnp.ndarray:
    """``torch.nn.GELU()``: the exact form, written as PyTorch writes it, ``x/2 · (1 + erf(x/√2))``.

    ``jax.nn.gelu`` defaults to the tanh approximation, and its exact form goes through ``erfc``,
    which XLA:CPU evaluates as two polynomial branches and a select, about twice the time of
    ``erf`` (docs/design_measurements.md); values agree to 1e-6.
    """
    return _gelu(x)


def _gelu_fwd(x):
    return _gelu(x), x


def _gelu_bwd(x, dy):
    # d/dx x·Φ(x) = Φ(x) + x·φ(x), in float32 at least (low-precision inputs lose nothing here).
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xf = x.astype(acc)
    cdf = 0.5 * (1.0 + jax.lax.erf(xf * np.asarray(_SQRT_HALF, acc)))
    pdf = np.asarray(_INV_SQRT_2PI, acc) * jnp.exp(-0.5 * xf * xf)
    return ((dy.astype(acc) * (cdf + xf * pdf)).astype(dy.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def softmax(x: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
    """``jax.nn.softmax(x, axis)`` (the same values) whose backward keeps only the output."""
    return _softmax_along(axis % x.ndim)(x)


@functools.cache  # one custom_vjp per axis (static), so JAX's tracing caches apply
def _softmax_along(axis: int):
    @jax.custom_vjp
    def along(x):
        return jax.nn.softmax(x, axis=axis)

    def fwd(x):
        p = jax.nn.softmax(x, axis=axis)
        return p, p

    def bwd(p, dp):
        return (p * (dp - jnp.sum(dp * p, axis=axis, keepdims=True)),)

    along.defvjp(fwd, bwd)
    return along

"""The per-token linear layer (PyTorch's ``nn.Linear``), with a weight gradient laid out for the backend.

Autodiff's weight gradient ``xᵀ·dy`` leaves XLA:CPU free to transpose ``dy`` inside the fusion that
produces it. When ``dy`` is wide and assembled from pieces (the qkv projection's: the q, k and v
gradients coming back from windowed attention) that fused transpose reads and writes with large
strides: in SwinIR-M it took 38 ms per unshifted block, for 20 MB. On the CPU the weight gradient
here transposes the narrower of ``x`` and ``dy`` as an array of its own and multiplies plainly; the
products and sums are autodiff's, and other backends keep autodiff's own formulation.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

# The name remat policies use to keep linear-layer outputs (iln_jax.models.REMAT_POLICIES).
LINEAR_OUTPUT = "linear_output"


def _weight_gradient(x: jnp.ndarray, dy: jnp.ndarray) -> jnp.ndarray:
    """``xᵀ·dy`` for (M, K) ``x`` and (M, N) ``dy``, transposing the narrower one by itself."""
    if x.shape[1] <= dy.shape[1]:
        return jax.lax.optimization_barrier(x.T) @ dy
    return (jax.lax.optimization_barrier(dy.T) @ x).T


@jax.custom_vjp
def _linear_cpu(x, kernel, bias):
    return x @ kernel + bias


def _linear_cpu_fwd(x, kernel, bias):
    return _linear_cpu(x, kernel, bias), (x, kernel)


def _linear_cpu_bwd(residuals, dy):
    x, kernel = residuals
    k, n = kernel.shape
    dy2 = dy.reshape(-1, n)
    dkernel = _weight_gradient(x.reshape(-1, k), dy2).astype(kernel.dtype)
    return (dy @ kernel.T).astype(x.dtype), dkernel, jnp.sum(dy2, axis=0).astype(dy.dtype)


_linear_cpu.defvjp(_linear_cpu_fwd, _linear_cpu_bwd)


def linear(x: jnp.ndarray, kernel: jnp.ndarray, bias: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """``x @ kernel + bias`` over the last axis of ``x``; the result is named :data:`LINEAR_OUTPUT`."""
    if jax.default_backend() != "cpu":
        y = x @ kernel
        y = y if bias is None else y + bias
    else:
        y = _linear_cpu(x, kernel, jnp.zeros((kernel.shape[1],), x.dtype) if bias is None else bias)
    return checkpoint_name(y, LINEAR_OUTPUT)


class Linear(nn.Module):
    """``nn.Dense``'s parameters (``kernel`` (in, out), ``bias``) and dtype promotion, with :func:`linear`."""

    features: int
    use_bias: bool = True
    dtype: Optional[Any] = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return linear(x, kernel, bias)

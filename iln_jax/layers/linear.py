"""The per-token linear layer (PyTorch's ``nn.Linear``), with its gradient written for XLA:CPU.

Autodiff differentiates ``x @ kernel`` on the activations' own rank: the weight gradient contracts
``x`` and ``dy`` over every leading axis (batch, height, width, or windows and tokens) at once. On
the CPU the gradient here flattens the tokens to one axis first and multiplies plain 2-D matrices,
``xᵀ·dy`` and ``dy·kernelᵀ``, which XLA:CPU's matmul kernels take without a relayout: the SwinIR-M x4
loss + gradients at 4 x 48^2 ran ~15 % faster than autodiff's (8 interleaved rounds on the 2-core
CPU: autodiff 1.077x and this 0.923x the previous version's time). That previous version also
materialised ``xᵀ`` (or ``dyᵀ``) as an array of its own before the product; with the current kernels
that copy cost more than it saved (SwinIR-M 1.08-1.13x, HAT's first two residual groups 1.06x the
plain product's time). The products and sums are autodiff's; other backends keep autodiff's own
formulation.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

# The name remat policies use to keep linear-layer outputs (iln_jax.models.REMAT_POLICIES).
LINEAR_OUTPUT = "linear_output"


@jax.custom_vjp
def _linear_cpu(x, kernel, bias):
    return x @ kernel + bias


def _linear_cpu_fwd(x, kernel, bias):
    return _linear_cpu(x, kernel, bias), (x, kernel)


def _linear_cpu_bwd(residuals, dy):
    x, kernel = residuals
    k, n = kernel.shape
    dy2 = dy.reshape(-1, n)
    dkernel = (x.reshape(-1, k).T @ dy2).astype(kernel.dtype)
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

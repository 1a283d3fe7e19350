"""Stride-1 convolutions (PyTorch's ``nn.Conv1d/2d(..., stride=1)``), formulated for the backend.

XLA:CPU runs a convolution fast only in the canonical layout (input ``b01f``, kernel ``01io``), and
its pass that rewrites the others into it visits the top-level computation only. Autodiff's
gradient convolutions are never canonical, so inside a ``scan_layers`` loop body they fall to a
naive loop: a 180->180 3x3 conv's weight gradient at 4 x 48^2 took 7 s there, against 0.1 s at the
top level. Depthwise (grouped) convolutions are slow on XLA:CPU anywhere (4 x 48^2 x 180: 0.26 s
forward and backward, 6 s in a loop). On the CPU, therefore:

* a 1x1 convolution is the token-wise matmul it is (:func:`iln_jax.layers.linear.linear`);
* a dense k x k convolution has a custom VJP whose two gradient convolutions are written in the
  canonical layout, their operands flipped and transposed explicitly;
* a depthwise convolution is the sum of its k*k shifted, per-channel-scaled copies of the input,
  which XLA fuses into one loop; its input gradient is the same sum over dy, its weight gradient a
  loop of per-tap reductions (two Restormer-size layers, 4 x 128^2 x 254, forward and backward:
  5.1 s -> 0.34 s, the same planned memory).

Other backends (GPU, TPU) keep ``lax.conv_general_dilated`` and autodiff, and so does every backend
for a model with ``conv_impl="xla"`` (to compare, or to rule the formulations out). Every
formulation computes the same sums (float32 round-off apart); the parameters are ``nn.Conv``'s
(``kernel``: ``(*kernel_size, in // groups, out)``, ``bias``), so checkpoints and the PyTorch
converters are unchanged.

The choice is a model field, ``conv_impl`` (:data:`CONV_IMPLS`), like ``attention_impl``. Convs sit
in every block of every backbone, so instead of a field on each of them the model's shell traces
its forward inside :func:`conv_impl_scope`, and :func:`conv` reads the formulation from there
while it is traced. ``ILN_JAX_CONV=auto|xla`` in the environment overrides every model's field.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from typing import Any, Callable, Iterator, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from iln_jax.layers.linear import linear

# The name remat policies use to keep convolution outputs (iln_jax.models.REMAT_POLICIES).
CONV_OUTPUT = "conv_output"
# "auto": the per-backend formulations below; "xla": lax.conv_general_dilated on every backend.
CONV_IMPLS = ("auto", "xla")
# When set, overrides the conv_impl of every model (e.g. to time a config both ways unedited).
CONV_ENV = "ILN_JAX_CONV"

# The conv_impl of the model being traced (set by its shell through conv_impl_scope).
_TRACED_IMPL = contextvars.ContextVar("conv_impl", default="auto")

_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}

Padding = tuple[tuple[int, int], ...]


def _xla_conv(x, kernel, padding: Padding, groups: int = 1):
    return jax.lax.conv_general_dilated(x, kernel, (1,) * len(padding), padding,
                                        dimension_numbers=_DIMS[len(padding)], feature_group_count=groups)


def _gradient_padding(size: Sequence[int], padding: Padding) -> Padding:
    """The padding under which correlating dy with the flipped kernel gives a stride-1 input gradient."""
    return tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(size, padding))


@functools.lru_cache(maxsize=None)  # one custom_vjp per padding, so JAX's tracing caches apply
def _canonical_backward(padding: Padding):
    """A stride-1 dense convolution whose VJP is two canonical-layout convolutions."""
    spatial = len(padding)

    @jax.custom_vjp
    def conv(x, kernel):
        return _xla_conv(x, kernel, padding)

    def forward(x, kernel):
        return conv(x, kernel), (x, kernel)

    def backward(residuals, dy):
        x, kernel = residuals
        size = kernel.shape[:spatial]
        axes = tuple(range(spatial))
        # Input gradient: the correlation of dy with the flipped kernel, in and out swapped.
        flipped = jnp.swapaxes(jnp.flip(kernel, axes), -1, -2)
        dx = _xla_conv(dy, flipped, _gradient_padding(size, padding))
        # Weight gradient: a convolution whose "batch" is the input channels and whose features
        # are the images: x as (Cin, *spatial, B), dy as the kernel (*spatial, B, Cout).
        x_t = jnp.transpose(x, (x.ndim - 1, *range(1, x.ndim - 1), 0))
        dy_t = jnp.moveaxis(dy, 0, -2)
        dkernel = jnp.moveaxis(_xla_conv(x_t, dy_t, padding), 0, -2)
        return dx.astype(x.dtype), dkernel.astype(kernel.dtype)

    conv.defvjp(forward, backward)
    return conv


def _shifted_sum(x, taps, padding: Padding):
    """The sum over kernel taps t of (x padded, shifted by t's offset) * taps[t]; taps is (*size, C)."""
    spatial = len(padding)
    size = taps.shape[:spatial]
    out_size = [n + lo + hi - k + 1 for n, k, (lo, hi) in zip(x.shape[1:-1], size, padding)]
    x = jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
    out = None
    for offset in _offsets(size):
        term = x[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offset, out_size))] * taps[offset]
        out = term if out is None else out + term
    return out


@functools.lru_cache(maxsize=None)
def _depthwise_as_shifts(padding: Padding):
    """A depthwise convolution (one filter per channel, multiplier 1) as a shifted sum, with an
    input gradient of the same form and a weight gradient of per-tap reductions."""
    spatial = len(padding)

    @jax.custom_vjp
    def depthwise(x, kernel):
        return _shifted_sum(x, kernel[..., 0, :], padding)

    def forward(x, kernel):
        return depthwise(x, kernel), (x, kernel)

    def backward(residuals, dy):
        x, kernel = residuals
        size = kernel.shape[:spatial]
        flipped = jnp.flip(kernel[..., 0, :], tuple(range(spatial)))
        dx = _shifted_sum(dy, flipped, _gradient_padding(size, padding))
        # One reduction per tap of the shifted input times dy, in a loop over the taps: XLA:CPU
        # materialises the shifted window that feeds each reduction, and unrolled, it kept all
        # k*k of them alive at once (Restormer's step planned 2.7x the memory).
        x = jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
        window_shape = (x.shape[0], *dy.shape[1:-1], x.shape[-1])
        sum_axes = tuple(range(dy.ndim - 1))

        def tap(offset):
            start = (0, *(offset[i] for i in range(spatial)), 0)
            return jnp.sum(jax.lax.dynamic_slice(x, start, window_shape) * dy, axis=sum_axes)

        dkernel = jax.lax.map(tap, jnp.asarray(_offsets(size), jnp.int32))
        return dx.astype(x.dtype), dkernel.reshape(kernel.shape).astype(kernel.dtype)

    depthwise.defvjp(forward, backward)
    return depthwise


def _offsets(size: Sequence[int]):
    """The kernel taps' offsets in row-major order (the order of ``kernel.reshape(-1, C)``)."""
    offsets = [()]
    for k in size:
        offsets = [o + (i,) for o in offsets for i in range(k)]
    return offsets


@contextlib.contextmanager
def conv_impl_scope(impl: str) -> Iterator[None]:
    """Convolutions traced inside use ``impl`` (one of :data:`CONV_IMPLS`); a model's shell wraps its
    forward in it with the model's ``conv_impl``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"Unknown conv_impl {impl!r}; valid: {', '.join(CONV_IMPLS)}")
    token = _TRACED_IMPL.set(impl)
    try:
        yield
    finally:
        _TRACED_IMPL.reset(token)


def formulation() -> str:
    """The formulation of the convolution being traced: ``ILN_JAX_CONV`` when set, else the traced
    model's ``conv_impl`` (``auto`` outside any model)."""
    value = os.environ.get(CONV_ENV)
    if value is None:
        return _TRACED_IMPL.get()
    if value not in CONV_IMPLS:
        raise ValueError(f"{CONV_ENV}={value!r}: expected one of {', '.join(CONV_IMPLS)}")
    return value


def conv(x: jnp.ndarray, kernel: jnp.ndarray, bias: Optional[jnp.ndarray] = None, *,
         padding: Padding, groups: int = 1) -> jnp.ndarray:
    """Stride-1 convolution of channels-last ``x`` with an ``nn.Conv`` kernel; named :data:`CONV_OUTPUT`.

    A 1x1 convolution returns :func:`linear`'s output (named as a linear layer's)."""
    spatial = len(padding)
    size = kernel.shape[:spatial]
    c_in, c_out = x.shape[-1], kernel.shape[-1]
    on_cpu = jax.default_backend() == "cpu" and formulation() == "auto"
    if on_cpu and groups == 1 and all(k == 1 for k in size) and not any(lo or hi for lo, hi in padding):
        return linear(x, kernel.reshape(c_in, c_out), bias)
    if on_cpu and groups == 1:
        y = _canonical_backward(tuple(padding))(x, kernel)
    elif on_cpu and groups == c_in == c_out:
        acc = jnp.promote_types(x.dtype, jnp.float32)
        y = _depthwise_as_shifts(tuple(padding))(x.astype(acc), kernel.astype(acc)).astype(x.dtype)
    else:
        y = _xla_conv(x, kernel, tuple(padding), groups)
    if bias is not None:
        y = y + bias
    return checkpoint_name(y, CONV_OUTPUT)


class Conv(nn.Module):
    """``nn.Conv`` restricted to stride 1 and explicit padding (its parameters, init and dtype
    promotion), computed by :func:`conv`."""

    features: int
    kernel_size: Sequence[int]
    padding: Sequence[tuple[int, int]]
    use_bias: bool = True
    feature_group_count: int = 1
    dtype: Optional[Any] = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c_in = x.shape[-1]
        if c_in % self.feature_group_count or self.features % self.feature_group_count:
            raise ValueError(f"{self.name}: {c_in} input and {self.features} output channels are not "
                             f"divisible by feature_group_count={self.feature_group_count}")
        shape = (*self.kernel_size, c_in // self.feature_group_count, self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv(x, kernel, bias, padding=tuple(tuple(p) for p in self.padding),
                    groups=self.feature_group_count)

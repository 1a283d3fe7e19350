"""Low-precision inference (the i-LN paper's Table 3): W+F in fp16 / bf16, weight-only int8 / int4.

Modes (:data:`PRECISIONS`):

* ``"fp32"`` -- the reference.
* ``"fp16"``, ``"bf16"`` (**W+F**, weights and features): every floating parameter is cast to the
  dtype and the module's computation ``dtype`` is set, so the input, every conv / dense / attention
  and every stored feature are in that dtype (the SR shell casts its mean / std constants too).
  Norm *statistics* are the exception: ``iln_jax.layers.norms`` computes mean and variance in
  float32 and casts the normalized tensor back, as PyTorch's half LayerNorm on CUDA does. The
  i-LN branch scale ``sqrt(var + eps)`` is cast back to the feature dtype as well. Softmax runs in
  the feature dtype. On CPU, XLA accumulates fp16/bf16 dot products in float32 and rounds the
  result (what cuBLAS does with fp32 accumulation), so an overflow shows up where a stored feature
  exceeds the format's range: 65504 for fp16; bf16 has float32's range and 8 mantissa bits.
* ``"int8"``, ``"int4"`` (**W**, weight-only): the kernel of every Dense and Conv layer is
  fake-quantized -- symmetric, per output channel, round to nearest,
  ``scale_o = max|w_o| / (2^(b-1) - 1)``, ``w ~= scale_o * clip(round(w / scale_o))`` -- and the
  dequantized float32 weights are used, so features stay float32. Biases, norm parameters and
  relative-position tables are not quantized (they are a negligible share of the weights).

:func:`for_precision` returns the ``(module, variables)`` pair to run; ``iln_jax.inference.runner``
and ``iln_jax.analysis`` use it.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
FLOAT_DTYPES = {"fp32": jnp.float32, "fp16": jnp.float16, "bf16": jnp.bfloat16}
WEIGHT_BITS = {"int8": 8, "int4": 4}
FP16_MAX = float(np.finfo(np.float16).max)  # 65504


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")


def cast_floating(tree: Any, dtype) -> Any:
    """Cast every floating leaf of a pytree to ``dtype`` (integer leaves are left alone)."""
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(cast, tree)


# One program for a whole tree: cast leaf by leaf outside jit, each distinct shape compiled a program of its own.
_cast_tree = jax.jit(cast_floating, static_argnums=1)


def fake_quantize(w, bits: int) -> np.ndarray:
    """Symmetric per-output-channel (last axis) quantize -> dequantize of a kernel, float32 (host)."""
    w = np.asarray(w, np.float32)
    qmax = 2 ** (bits - 1) - 1
    reduce = tuple(range(w.ndim - 1))
    scale = np.max(np.abs(w), axis=reduce, keepdims=True) / np.float32(qmax)
    scale = np.where(scale > 0, scale, np.float32(1.0))
    return (np.clip(np.round(w / scale), -qmax, qmax) * scale).astype(np.float32)


def quantize_kernels(params: Any, bits: int) -> Any:
    """Fake-quantize every ``kernel`` leaf (Dense and Conv weights); everything else is unchanged."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    out = {path: fake_quantize(v, bits) if path[-1] == "kernel" else v for path, v in flat.items()}
    return flax.traverse_util.unflatten_dict(out)


def weight_quantization_error(params: Any, bits: int) -> float:
    """Relative L2 error ``||Q(w) - w|| / ||w||`` over all kernels (a quick sanity number)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    num = den = 0.0
    for path, v in flat.items():
        if path[-1] == "kernel":
            v = np.asarray(v, np.float64)
            num += float(np.sum((np.asarray(fake_quantize(v, bits), np.float64) - v) ** 2))
            den += float(np.sum(v ** 2))
    return (num / den) ** 0.5 if den else 0.0


def for_precision(module, variables: dict, precision: str):
    """``(module, variables)`` that run at ``precision``; BatchNorm statistics stay float32."""
    check_precision(precision)
    variables = dict(variables)
    if precision in WEIGHT_BITS:
        variables["params"] = quantize_kernels(variables["params"], WEIGHT_BITS[precision])
        return module, variables
    if precision == "fp32":  # as the module is (a module of the user's own may have no dtype field)
        return (module.clone(dtype=None) if hasattr(module, "dtype") else module), variables
    if not hasattr(module, "dtype"):
        raise ValueError(f"{type(module).__name__} has no 'dtype' field; cannot run it in {precision}")
    dtype = FLOAT_DTYPES[precision]
    variables["params"] = _cast_tree(variables["params"], dtype)
    return module.clone(dtype=dtype), variables


def nonfinite_pixels(img: np.ndarray) -> int:
    """Number of pixel positions (H x W) with a NaN/inf in any channel of an (..., H, W, C) output."""
    return int(np.sum(~np.all(np.isfinite(img), axis=-1)))

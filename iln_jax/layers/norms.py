"""Pluggable normalization for residual transformer blocks (the i-LN paper's Table 1).

Every norm module maps a feature tensor ``x`` of shape ``(B, ..., C)`` (tokens ``(B, L, C)`` or
NHWC) to ``(normalized, branch_scale)``. A pre-norm residual block is written once, for all norms::

    y, scale = norm(name="norm1")(x)
    x = x + scale * branch(y)

``branch_scale`` is what lets i-LN be expressed without a single ``if norm == ...``: it is the
per-image ``sqrt(var + eps)`` of the block input for i-LN, a learnable per-channel vector for
LayerScale, a learnable scalar for ReZero, and ``1.0`` (folded away by XLA) for the others.

Norms always receive the whole image's tokens (before any window partition), so holistic and
instance statistics are per image, never per window.

A model asks ``norm_registry.make_norm`` once for a :class:`NormSpec`: ``branch`` is the norm in front
of every residual branch, ``outer`` the norm for places without a residual around them (after the
patch embedding, and the final norm of the body). i-LN turns ``outer`` into a plain per-channel
affine as the official code does; ``rezero`` and ``none`` turn it into the identity. This module
holds the built-in grid (:data:`BUILTIN_NORMS`); ``norm_registry`` adds user norms and resolves names.

Parameter names: ``scale``/``bias`` (per-channel affine), ``branch_scale`` (LayerScale), ``alpha``
(ReZero); BatchNorm keeps running ``mean``/``var`` in the ``batch_stats`` collection.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
from typing import Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]

# PyTorch nn.LayerNorm's default; Flax's own default (1e-6) would break parity.
TORCH_LN_EPS = 1e-5
# The official i-LN code's eps (`glob_eps`), used for LN* and i-LN.
HOLISTIC_EPS = 1e-4
# Per-channel std of DF2K RGB images that the official i-LN divides its input by (`stdnorm`).
ILN_RGB_STD = (0.2842, 0.2701, 0.2920)
# LayerScale's initial per-channel branch scale (CaiT uses 1e-5..0.1 by depth; small keeps early
# training close to the identity, the property the norm is compared on).
LAYERSCALE_INIT = 1e-4


def _affine(module: nn.Module, x, use_bias: bool = True):
    channels = x.shape[-1]
    y = x * module.param("scale", nn.initializers.ones, (channels,)).astype(x.dtype)
    if use_bias:
        y = y + module.param("bias", nn.initializers.zeros, (channels,)).astype(x.dtype)
    return y


def _moments(x, axes):
    """Mean and population variance as PyTorch computes them (two passes), in >= float32."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(x32, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=axes, keepdims=True)
    return x32, mean, var


def _standardize(x, axes, eps):
    """``((x - mean) / std, std)`` over ``axes`` with ``std = sqrt(var + eps)``, as PyTorch (two-pass
    moments, >= float32); ``y`` in ``x``'s dtype."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    y, std = _standardized(x32, tuple(axes), eps)
    return y.astype(x.dtype), std


def _standardized_forward(x, axes, eps):
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    std = jnp.sqrt(var + eps)
    return ((x - mean) / std, std), (x, mean, std)


# The backward in closed form. XLA's autodiff of the two-pass moments over a whole image (LN*,
# i-LN) took 2.5x as long as this on CPU (it re-reduces the broadcast statistics), which made i-LN
# ~45% slower to train than LayerNorm at SwinIR-M size; per-token LayerNorm gains too.
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _standardized(x, axes, eps):
    return _standardized_forward(x, axes, eps)[0]


def _standardized_backward(axes, eps, residuals, cotangents):
    x, mean, std = residuals
    g_y, g_std = cotangents
    y = (x - mean) / std
    count = math.prod(x.shape[a] for a in axes)
    # d y / d x = (I - 1/n - y y^T / n) / std;  d std / d x = y / n
    mean_g = jnp.mean(g_y, axis=axes, keepdims=True)
    mean_gy = jnp.mean(g_y * y, axis=axes, keepdims=True)
    return ((g_y - mean_g - y * mean_gy) / std + y * (g_std / count),)


_standardized.defvjp(_standardized_forward, _standardized_backward)


def _all_but_batch(x) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def _spatial(x) -> tuple[int, ...]:
    return tuple(range(1, x.ndim - 1))


class Identity(nn.Module):
    """No normalization: ``none``, and the outer slot of ``rezero``."""

    @nn.compact
    def __call__(self, x):
        return x, 1.0


class Affine(nn.Module):
    """Per-channel affine, no normalization: i-LN's outer norm (the official ``Affine``)."""

    @nn.compact
    def __call__(self, x):
        return _affine(self, x), 1.0


class LayerNorm(nn.Module):
    """Per-token LayerNorm over channels, as ``torch.nn.LayerNorm`` (eps 1e-5)."""

    eps: float = TORCH_LN_EPS

    @nn.compact
    def __call__(self, x):
        y, _ = _standardize(x, (-1,), self.eps)
        return _affine(self, y), 1.0


class BiasFreeLayerNorm(nn.Module):
    """Restormer's ``BiasFree_LayerNorm`` (Gaussian denoising): ``x / sqrt(var + eps) * w``.

    The variance is the usual mean-subtracted one, but ``x`` itself is not centred and there is no
    bias, so a constant offset survives the norm (unlike LayerNorm and RMSNorm).
    """

    eps: float = TORCH_LN_EPS

    @nn.compact
    def __call__(self, x):
        x32, _, var = _moments(x, (-1,))
        y = (x32 / jnp.sqrt(var + self.eps)).astype(x.dtype)
        return _affine(self, y, use_bias=False), 1.0


class RMSNorm(nn.Module):
    """Per-token RMS normalization over channels, learnable per-channel scale, no bias."""

    eps: float = TORCH_LN_EPS

    @nn.compact
    def __call__(self, x):
        x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        ms = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 / jnp.sqrt(ms + self.eps)).astype(x.dtype)
        return _affine(self, y, use_bias=False), 1.0


class LayerScale(nn.Module):
    """Per-token LayerNorm, and a learnable per-channel scale on the branch output (CaiT)."""

    eps: float = TORCH_LN_EPS
    init_value: float = LAYERSCALE_INIT

    @nn.compact
    def __call__(self, x):
        y, _ = _standardize(x, (-1,), self.eps)
        gamma = self.param("branch_scale", nn.initializers.constant(self.init_value), (x.shape[-1],))
        return _affine(self, y), gamma.astype(x.dtype)


class ReZero(nn.Module):
    """No normalization; the branch is scaled by a learnable scalar that starts at 0."""

    @nn.compact
    def __call__(self, x):
        alpha = self.param("alpha", nn.initializers.zeros, ())
        return x, alpha.astype(x.dtype)


class InstanceNorm(nn.Module):
    """Per image and per channel, statistics over all tokens (pixels); per-channel affine."""

    eps: float = TORCH_LN_EPS

    @nn.compact
    def __call__(self, x):
        y, _ = _standardize(x, _spatial(x), self.eps)
        return _affine(self, y), 1.0


class BatchNorm(nn.Module):
    """Per channel over the batch and all tokens; running statistics in eval.

    Under ``jit`` with the batch sharded over a mesh the statistics are global by construction;
    under ``pmap``/``shard_map`` pass ``axis_name`` so they are averaged over devices.
    ``momentum`` 0.9 in Flax terms is PyTorch's ``momentum=0.1``; like PyTorch, the running
    variance is the unbiased one.
    """

    train: bool = False
    axis_name: Optional[str] = None
    eps: float = TORCH_LN_EPS
    momentum: float = 0.9

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((channels,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((channels,), jnp.float32))
        if not self.train:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
            count = x32.size // channels
            mean = jnp.mean(x32, axis=axes)
            if self.axis_name is not None:
                mean = jax.lax.pmean(mean, self.axis_name)
            var = jnp.mean(jnp.square(x32 - mean), axis=axes)
            if self.axis_name is not None:
                var = jax.lax.pmean(var, self.axis_name)
                count = count * jax.lax.psum(1, self.axis_name)
            if not self.is_initializing():
                unbiased = var * count / jnp.maximum(count - 1, 1)
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
        y = ((x - mean.astype(x.dtype)) / jnp.sqrt(var + self.eps).astype(x.dtype))
        return _affine(self, y), 1.0


class HolisticLayerNorm(nn.Module):
    """LN*: mean and variance over the whole extent (L x C, or H x W x C) of each image.

    With ``rescale`` (i-LN) the branch scale is the same per-image ``sqrt(var + eps)``, so the
    residual branch sees a normalized input and returns a correctly-scaled update:
    ``x + sqrt(var + eps) * f(LN*(x))``. The scale is not detached, as in the official code.
    """

    eps: float = HOLISTIC_EPS
    rescale: bool = False

    @nn.compact
    def __call__(self, x):
        y, std = _standardize(x, _all_but_batch(x), self.eps)
        scale = std.astype(x.dtype) if self.rescale else 1.0
        return _affine(self, y), scale


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """The norm factories a model uses: ``branch`` before residual branches, ``outer`` elsewhere
    (after the patch embedding, the final norm of the body). ``outer=None``: the branch norm."""

    name: str
    branch: ModuleDef
    outer: Optional[ModuleDef] = None

    def __post_init__(self):
        if self.outer is None:
            object.__setattr__(self, "outer", self.branch)


# The built-in grid, fixed. Users add norms with ``iln_jax.layers.norm_registry.register_norm``
# (or pass an import path / a NormSpec); the live list is ``norm_registry.registered_norms()``.
BUILTIN_NORMS: Mapping[str, NormSpec] = types.MappingProxyType({spec.name: spec for spec in (
    NormSpec("layernorm", LayerNorm),
    NormSpec("rmsnorm", RMSNorm),
    NormSpec("layerscale", LayerScale, LayerNorm),
    NormSpec("rezero", ReZero, Identity),
    NormSpec("none", Identity),
    NormSpec("instancenorm", InstanceNorm),
    NormSpec("batchnorm", BatchNorm),
    NormSpec("ln_star", HolisticLayerNorm),
    NormSpec("iln", functools.partial(HolisticLayerNorm, rescale=True), Affine),
    NormSpec("biasfree_layernorm", BiasFreeLayerNorm),
)})
NORMS: tuple[str, ...] = tuple(BUILTIN_NORMS)

"""Rematerialisation that XLA:CPU cannot undo, for blocks that are not scanned.

``jax.checkpoint`` keeps the recomputation apart from the forward pass with optimisation barriers
(``prevent_cse``). XLA:CPU removes those barriers early in its pipeline (before scheduling), so
the recomputation is the same expression as the forward pass: common-subexpression elimination
merges the two and every activation is kept after all. Measured with jax 0.10: a 12-block MLP
plans 500 MiB with and without ``jax.checkpoint``; HAT x4's unrolled step planned the same
memory under ``"none"``, ``"block"`` and ``"dots"``. GPU and TPU keep the barriers until after
scheduling; a scan's loop boundary does the same job (``stacking.remat`` uses plain ``nn.remat``
there).

:func:`checkpoint_after_cotangent` makes the recomputation depend on the block's output
cotangent: in the backward pass every residual gets ``0 · (one element of the cotangent)``
added, so the recomputation is a different expression (no CSE) that cannot be scheduled before
the backward pass reaches the block. The values are unchanged (``r + 0`` is ``r`` for finite
cotangents; a non-finite cotangent makes the gradients non-finite anyway). :func:`remat` is the
Flax-lifted form, for a module class, like ``nn.remat``.
"""
from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import lift


def _zero_after(cotangent) -> Optional[jnp.ndarray]:
    """A float32 zero that the compiler must compute from ``cotangent`` (None if it has no float leaf)."""
    for leaf in jax.tree.leaves(cotangent):
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact) and leaf.size:
            return leaf.reshape(-1)[0].real.astype(jnp.float32) * 0.0
    return None


def _tie(residual, zero):
    if hasattr(residual, "dtype") and jnp.issubdtype(residual.dtype, jnp.floating):
        return residual + zero.astype(residual.dtype)
    return residual


def checkpoint_after_cotangent(fn: Callable, policy: Optional[Callable] = None) -> Callable:
    """``jax.checkpoint(fn, policy=policy)`` whose recomputation runs in the backward pass on every
    backend. ``fn`` takes positional arguments only."""
    checkpointed = jax.checkpoint(fn, policy=policy, prevent_cse=False)

    @jax.custom_vjp
    def wrapped(*args):
        return fn(*args)

    def forward(*args):
        return jax.vjp(checkpointed, *args)  # (outputs, the residuals the policy keeps, as a pytree)

    def backward(vjp_fn, cotangent):
        zero = _zero_after(cotangent)
        if zero is not None:
            vjp_fn = jax.tree.map(lambda r: _tie(r, zero), vjp_fn)
        return vjp_fn(cotangent)

    wrapped.defvjp(forward, backward)
    return wrapped


def _lifted_checkpoint(fn, variables=True, rngs=True, policy=None):
    """``flax.core.lift.checkpoint`` with :func:`checkpoint_after_cotangent` in place of jax.checkpoint."""
    def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):  # Flax drops keyword arguments (and warns)
        def rematted(variable_groups, rng_groups, *args):
            scope = scope_fn(variable_groups, rng_groups)
            return fn(scope, *args), repack_fn(scope)

        return checkpoint_after_cotangent(rematted, policy)(variable_groups, rng_groups, *args)

    return lift.pack(inner, (variables,), (variables,), (rngs,), name="remat")


def remat(block_cls: type, policy: Optional[Callable] = None) -> type:
    """``nn.remat(block_cls, policy=policy)`` whose recomputation XLA:CPU keeps (see the module doc)."""
    return nn.transforms.lift_transform(_lifted_checkpoint, block_cls, policy=policy)

"""Splits and cyclic shifts whose gradients are one copy, not a sum of zero-padded pieces.

Autodiff differentiates ``jnp.split`` (and ``x[..., i]``) piece by piece: each piece's gradient is
padded with zeros to the full shape and the padded arrays are added. ``jnp.roll`` is a slice and a
concatenation, so its gradient is the same sum of pads. XLA:CPU keeps those pads, writing three
zero-padded copies of every block's qkv gradient. Here the gradient of a split is the
concatenation of the pieces' gradients and the gradient of a roll is the opposite roll: the same
values (a permutation, nothing is added), in one pass that fuses with the copies around it. The
memory traffic saved matters most on bandwidth-bound accelerators (numbers:
docs/design_measurements.md).
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _split(x: jnp.ndarray, sizes: tuple[int, ...], axis: int) -> tuple[jnp.ndarray, ...]:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return tuple(jax.lax.slice_in_dim(x, s, s + n, axis=axis) for s, n in zip(starts, sizes))


def _split_fwd(x, sizes, axis):
    return _split(x, sizes, axis), None


def _split_bwd(sizes, axis, _, cotangents):
    return (jnp.concatenate(cotangents, axis=axis),)


_split.defvjp(_split_fwd, _split_bwd)


def split(x: jnp.ndarray, sections: int | Sequence[int], axis: int = -1) -> tuple[jnp.ndarray, ...]:
    """``jnp.split(x, sections, axis)`` (equal parts for an int, else the split indices); the
    gradient concatenates the parts' gradients."""
    axis = axis % x.ndim
    n = x.shape[axis]
    if isinstance(sections, int):
        if n % sections:
            raise ValueError(f"cannot split an axis of {n} into {sections} equal parts")
        sizes = (n // sections,) * sections
    else:
        bounds = [0, *sections, n]
        sizes = tuple(b - a for a, b in itertools.pairwise(bounds))
        if any(s < 0 for s in sizes):
            raise ValueError(f"split indices {list(sections)} are not increasing within 0..{n}")
    return _split(x, sizes, axis)


def unstack(x: jnp.ndarray, axis: int) -> tuple[jnp.ndarray, ...]:
    """The slices of ``x`` along ``axis`` (that axis removed); the gradient stacks theirs."""
    axis = axis % x.ndim
    return tuple(jnp.squeeze(p, axis) for p in _split(x, (1,) * x.shape[axis], axis))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _roll(x: jnp.ndarray, shifts: tuple[int, ...], axes: tuple[int, ...]) -> jnp.ndarray:
    return jnp.roll(x, shifts, axes)


def _roll_fwd(x, shifts, axes):
    return _roll(x, shifts, axes), None


def _roll_bwd(shifts, axes, _, cotangent):
    return (_roll(cotangent, tuple(-s for s in shifts), axes),)


_roll.defvjp(_roll_fwd, _roll_bwd)


def roll(x: jnp.ndarray, shifts: Sequence[int], axes: Sequence[int]) -> jnp.ndarray:
    """``jnp.roll`` by static ``shifts`` along ``axes``; the gradient is the opposite roll."""
    return _roll(x, tuple(int(s) for s in shifts), tuple(a % x.ndim for a in axes))

"""The variables a module would create, as shapes, without creating them.

Tracing a model's ``init`` takes up to a second or two for a U-Net, and converting weights or
changing their layout needs the variable tree on every call (a round trip to the official names
needs it on both sides). Equal modules (every field equal) with a built-in norm create the same
variables, so the result is kept per ``(module, input shape)``; a user's norm (which may be
registered again under its name) or an unhashable field is traced each time.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from iln_jax.layers.norm_registry import is_builtin

_KEPT = 32
_CACHE: dict = {}


def variable_shapes(module, input_shape: tuple[int, ...]):
    """``jax.eval_shape(module.init, key, x)`` for a float32 ``x`` of ``input_shape`` (train=False)."""
    try:
        key = (module, tuple(input_shape)) if is_builtin(getattr(module, "norm", None)) else None
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    if key is not None:
        if len(_CACHE) >= _KEPT:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = shapes
    return shapes

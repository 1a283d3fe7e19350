"""Variables of a ``scan_layers=True`` model <-> the unrolled layout (the official names).

A scanned model keeps the variables of its repeated blocks stacked: the unrolled
``layers_3/residual_group/blocks_4/attn/qkv/kernel`` of SwinIR is entry ``[3, 2]`` of
``layers/residual_group/pairs/unshifted/attn/qkv/kernel``. Each model says where every unrolled
path goes (``module.scan_path(path) -> (scanned path, index)``); the functions here use that to
stack and unstack whole variable trees (any collection), so official weights, checkpoints and the
converter work the same in both layouts.
"""
from __future__ import annotations

from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from iln_jax.models.shapes import variable_shapes
from iln_jax.models.sr_shell import SRTransformer

Flat = dict[tuple[str, ...], Any]


def is_scanned(module) -> bool:
    return bool(getattr(module, "scan_layers", False))


def unrolled(module):
    """The same model with ``scan_layers=False`` (its variables use the official names)."""
    return module.clone(scan_layers=False) if is_scanned(module) else module


def example_shape(module) -> tuple[int, ...]:
    """A small input that every backbone accepts and whose size does not change parameter shapes."""
    if isinstance(module, SRTransformer):
        side = module.img_size if module.ape else module.window_size
        return (1, side, side, module.in_chans)
    return (1, 8, 8, module.inp_channels)


def _flat(tree) -> Flat:
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _stack(items: dict[tuple[int, ...], Any]):
    """``{index tuple: array}`` -> one array with the index axes in front."""
    if list(items) == [()]:
        return items[()]
    xp = np if all(isinstance(v, np.ndarray) for v in items.values()) else jnp
    depth = len(next(iter(items)))

    def build(prefix):
        if len(prefix) == depth:
            return items[prefix]
        n = 1 + max(k[len(prefix)] for k in items if k[:len(prefix)] == prefix)
        return xp.stack([build(prefix + (i,)) for i in range(n)])
    return build(())


def to_scanned(module, variables: dict) -> dict:
    """Unrolled variables (``{collection: tree}``) -> the layout of ``module`` (a no-op unless scanned)."""
    if not is_scanned(module):
        return variables
    groups: dict[tuple[str, ...], dict] = {}
    for (collection, *path), value in _flat(variables).items():
        new_path, index = module.scan_path(tuple(path))
        slot = groups.setdefault((collection, *new_path), {})
        if index in slot:
            raise ValueError(f"Two variables map to {'/'.join(new_path)}[{index}]")
        slot[index] = value
    return flax.traverse_util.unflatten_dict({k: _stack(v) for k, v in groups.items()})


def unrolled_paths(module) -> list[tuple[str, ...]]:
    """Every variable path ``(collection, *modules, name)`` of the unrolled model."""
    flat_module = unrolled(module)
    shapes = variable_shapes(flat_module, example_shape(flat_module))
    return list(_flat(shapes))


def to_unrolled(module, variables: dict) -> dict:
    """Variables in the layout of ``module`` -> the unrolled layout (a no-op unless scanned)."""
    if not is_scanned(module):
        return variables
    flat = _flat(variables)
    out = {}
    for collection, *path in unrolled_paths(module):
        new_path, index = module.scan_path(tuple(path))
        key = (collection, *new_path)
        if key in flat:
            out[(collection, *path)] = flat[key][index] if index else flat[key]
    missing = set(flat) - {(c, *module.scan_path(tuple(p))[0]) for c, *p in out}
    if missing:
        raise ValueError(f"Variables the unrolled model does not have: {sorted('/'.join(k) for k in missing)[:10]}")
    return flax.traverse_util.unflatten_dict(out)


def params_to_scanned(module, params):
    """:func:`to_scanned` for a ``params`` tree alone (e.g. gradients or EMA weights)."""
    return to_scanned(module, {"params": params})["params"]


def params_to_unrolled(module, params):
    """:func:`to_unrolled` for a ``params`` tree alone (e.g. gradients or EMA weights)."""
    return to_unrolled(module, {"params": params})["params"]

"""Generic, name-driven mapping between Flax variables and official PyTorch state_dict keys.

Flax module names mirror the official module tree, with ``name.N`` (an ``nn.Sequential`` /
``nn.ModuleList`` entry) written ``name_N``. Which names are such containers is declared per arch
(``sequences``), so ``down1_2`` (a Restormer module name) is never mistaken for ``down1.2``.
Leaves: ``kernel`` <-> ``weight`` with the layout transposed (Linear (out,in), Conv1d (O,I,k),
Conv2d (O,I,kH,kW)); norm ``scale``/``bias`` <-> ``weight``/``bias`` (or ``gamma``/``beta`` for the
official i-LN); BatchNorm statistics <-> ``running_mean``/``running_var``; everything else keeps
its name and layout.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np

_INDEXED = re.compile(r"^(.+)_(\d+)$")

# flax kernel (ndim) -> axes permutation giving the torch layout; the inverse is applied on load.
_KERNEL_TO_TORCH = {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1)}


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One tensor: its Flax location, its torch key, and the layout permutation between them."""

    collection: str
    flax_path: tuple[str, ...]
    torch_key: str
    to_torch_axes: tuple[int, ...] | None  # None: same layout

    def to_torch(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        return value if self.to_torch_axes is None else np.transpose(value, self.to_torch_axes)

    def from_torch(self, value: np.ndarray) -> np.ndarray:
        if self.to_torch_axes is None:
            return value
        return np.transpose(value, np.argsort(self.to_torch_axes))

    def torch_shape(self, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.to_torch_axes is None:
            return tuple(flax_shape)
        return tuple(flax_shape[a] for a in self.to_torch_axes)


def _module_key(path: tuple[str, ...], sequences: frozenset[str]) -> list[str]:
    parts = []
    for name in path:
        m = _INDEXED.match(name)
        parts.extend([m.group(1), m.group(2)] if m and m.group(1) in sequences else [name])
    return parts


def leaves(flat_shapes: dict[tuple[str, ...], tuple[int, ...]], sequences: frozenset[str],
           norm_names: tuple[str, str] = ("weight", "bias")) -> list[Leaf]:
    """Map every flattened Flax variable ``(collection, *modules, leaf) -> shape`` to a :class:`Leaf`."""
    modules_with_scale = {path[:-1] for path in flat_shapes if path[-1] == "scale"}
    out = []
    for path, shape in flat_shapes.items():
        collection, modules, leaf = path[0], path[1:-1], path[-1]
        axes = None
        if leaf == "kernel":
            name, axes = "weight", _KERNEL_TO_TORCH[len(shape)]
        elif leaf == "scale":
            name = norm_names[0]
        elif leaf == "bias" and path[:-1] in modules_with_scale:
            name = norm_names[1]
        elif collection == "batch_stats":
            name = {"mean": "running_mean", "var": "running_var"}[leaf]
        else:
            name = leaf
        key = ".".join(_module_key(modules, sequences) + [name])
        out.append(Leaf(collection, path[1:], key, axes))
    return out


Rename = tuple[str, str]


def apply_renames(keys_to_values: dict, renames: tuple[Rename, ...]) -> dict:
    """Rewrite keys with ``(regex, replacement)`` pairs, in order."""
    if not renames:
        return dict(keys_to_values)
    out = {}
    for key, value in keys_to_values.items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


BufferFn = Callable[..., dict[str, np.ndarray]]

"""PyTorch <-> Flax weight conversion for the official models, strict about every key.

    module, variables = from_torch("swinir", "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth",
                                   upscale=2, img_size=64, window_size=8, embed_dim=180, ...)
    state_dict = to_torch("swinir", variables, upscale=2, img_size=64, ...)  # the same arguments
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)

Missing, unexpected and mis-shaped keys are collected and raised together in one
:class:`ConversionError`; buffers are recomputed and only checked for consistency.
"""
from __future__ import annotations

import importlib
from typing import Any, Optional

import flax
import jax
import numpy as np

from iln_jax import models
from iln_jax.errors import CheckpointError
from iln_jax.layers.norm_registry import is_builtin, norm_label
from iln_jax.models import scan_layout
from iln_jax.models.shapes import variable_shapes
from iln_jax.convert.mapping import Leaf, apply_renames, leaves
from iln_jax.convert.spec import ArchSpec
from iln_jax.convert.state_dict import load_state_dict

# Official architecture name -> spec module. "hat_iln" is the official i-LN HAT layout.
_SPECS = {
    "swinir": "iln_jax.convert.swinir",
    "restormer": "iln_jax.convert.restormer",
    "hint": "iln_jax.convert.hint",
    "hat": "iln_jax.convert.hat",
    "hat_iln": "iln_jax.convert.hat_iln",
    "drct": "iln_jax.convert.drct",
}


class ConversionError(CheckpointError):
    """A state_dict does not fit the model; the message lists every offending key."""


def arch_spec(arch: str) -> ArchSpec:
    if arch not in _SPECS:
        raise ValueError(f"No converter for arch {arch!r}; valid: {', '.join(_SPECS)}")
    return importlib.import_module(_SPECS[arch]).SPEC


def model_args(arch: str, **kwargs) -> tuple[str, str, dict]:
    """``(models.create arch, norm, Flax fields)`` for an official arch name and constructor arguments
    (the arch's defaults applied and its official argument names renamed)."""
    spec = arch_spec(arch)
    kwargs = {spec.kwarg_renames.get(k, k): v for k, v in {**spec.defaults, **kwargs}.items()}
    norm = kwargs.pop("norm", spec.norm)
    return spec.model_arch, norm, kwargs


def build(arch: str, **kwargs):
    """The Flax module for an official arch name with the official constructor arguments."""
    model_arch, norm, kwargs = model_args(arch, **kwargs)
    return models.create(model_arch, norm=norm, **kwargs)


def template(module, example_shape: tuple[int, ...], sequences: frozenset[str],
             norm_names: tuple[str, str] = ("weight", "bias")) -> list[tuple[Leaf, tuple[int, ...]]]:
    """Every variable of ``module`` (traced on an input of ``example_shape``, not run) as
    ``(Leaf, Flax shape)``, named by the generic rule of ``iln_jax.convert.mapping``."""
    shapes = variable_shapes(module, example_shape)  # every model's default is train=False
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes))
    flat_shapes = {path: tuple(v.shape) for path, v in flat.items()}
    return [(leaf, flat_shapes[(leaf.collection, *leaf.flax_path)])
            for leaf in leaves(flat_shapes, frozenset(sequences), norm_names)]


def _template(spec: ArchSpec, module) -> list[tuple[Leaf, tuple[int, ...]]]:
    """The official names are those of the unrolled model, whatever ``scan_layers`` says."""
    module = scan_layout.unrolled(module)
    return template(module, spec.example_input(module), spec.sequences, spec.norm_names)


def check_user_norm(arch: str, spec: ArchSpec, module) -> None:
    """A norm outside the built-in grid converts only when its variables are exactly those of the
    official norm (``weight``/``bias`` per norm): anything else has no official counterpart, which
    is said in one line rather than as a list of missing and unexpected keys."""
    if is_builtin(module.norm):
        return
    official = {leaf.torch_key for leaf, _ in _template(spec, module.clone(norm=spec.norm))}
    ours = {leaf.torch_key for leaf, _ in _template(spec, module)}
    extra, lacking = sorted(ours - official), sorted(official - ours)
    if extra or lacking:
        what = (f"its variables {_few(extra)} have no counterpart" if extra else
                f"it has no counterpart for the official {_few(lacking)}")
        raise ConversionError(f"norm {norm_label(module.norm)!r} cannot be converted to/from the official {arch} "
                              f"layout (official norm: {spec.norm}): {what}")


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


def _raise_problems(subject, arch, module, **problems):
    lines = [f"{title.replace('_', ' ')} ({len(items)}):\n    " + "\n    ".join(items)
             for title, items in problems.items() if items]
    if lines:
        raise ConversionError(f"{subject} {arch} ({type(module).__name__} "
                              f"norm={norm_label(module.norm)!r}):\n  " + "\n  ".join(lines))


def from_torch(arch: str, state_dict: Any, *, param_key: Optional[str] = None, **kwargs):
    """Convert an official state_dict (dict, wrapper dict or .pth path) -> ``(module, variables)``."""
    spec = arch_spec(arch)
    module = build(arch, **kwargs)
    check_user_norm(arch, spec, module)
    sd = apply_renames(load_state_dict(state_dict, param_key=param_key), spec.renames_from_torch)
    template = _template(spec, module)
    expected_buffers = spec.buffers(module)
    by_key = {leaf.torch_key: (leaf, shape) for leaf, shape in template}

    # Reported under their official names (before the arch's renames), as a user would grep them.
    missing = list(apply_renames({k: None for k in by_key if k not in sd}, spec.renames_to_torch))
    unexpected, bad_shape, bad_buffer = [], [], []
    for key, value in sd.items():
        if key in by_key:
            leaf, shape = by_key[key]
            want = leaf.torch_shape(shape)
            if tuple(value.shape) != want:
                bad_shape.append(f"{key}: expected {want}, got {tuple(value.shape)}")
        elif spec.is_buffer(key, expected_buffers):
            problem = spec.check_buffer(key, value, expected_buffers)
            if problem:
                bad_buffer.append(problem)
        elif key.endswith("num_batches_tracked"):
            continue
        else:
            unexpected.append(key)
    _raise_problems("The state_dict does not match", arch, module, missing_keys=missing, unexpected_keys=unexpected,
                    shape_mismatches=bad_shape, inconsistent_buffers=bad_buffer)

    # Stacked for a scanned layout on the host and moved by device_put: run op by op, jnp.stack and
    # jnp.asarray (of a NumPy array) compile a program per shape.
    flat = {(leaf.collection, *leaf.flax_path): np.asarray(leaf.from_torch(sd[key]), np.float32)
            for key, (leaf, _) in by_key.items()}
    return module, jax.device_put(scan_layout.to_scanned(module, flax.traverse_util.unflatten_dict(flat)))


def to_torch(arch: str, variables: Any, **kwargs) -> dict[str, np.ndarray]:
    """Flax variables -> an official state_dict (buffers included) as writable NumPy arrays; with
    ``torch.from_numpy`` on each it loads with ``load_state_dict(strict=True)``."""
    spec = arch_spec(arch)
    module = build(arch, **kwargs)
    check_user_norm(arch, spec, module)
    template = _template(spec, module)
    # On the host before unstacking a scanned layout: indexing device arrays op by op compiles once per shape.
    variables = jax.tree.map(np.asarray, flax.core.unfreeze(variables))
    flat = flax.traverse_util.flatten_dict(scan_layout.to_unrolled(module, variables))
    wanted = {(leaf.collection, *leaf.flax_path): (leaf, shape) for leaf, shape in template}
    missing = ["/".join(p) for p in wanted if p not in flat]
    unexpected = ["/".join(p) for p in flat if p not in wanted]
    bad_shape = [f"{'/'.join(p)}: expected {wanted[p][1]}, got {tuple(np.shape(v))}"
                 for p, v in flat.items() if p in wanted and tuple(np.shape(v)) != wanted[p][1]]
    _raise_problems("The Flax variables do not match", arch, module, missing_variables=missing, unexpected_variables=unexpected,
                    shape_mismatches=bad_shape)
    # np.ascontiguousarray would turn scalars (ReZero's and ExDA's alpha) into shape (1,)
    sd = {leaf.torch_key: np.array(leaf.to_torch(np.asarray(flat[path], np.float32)), order="C")
          for path, (leaf, _) in wanted.items()}
    sd.update({k: np.array(v) for k, v in spec.buffers(module).items()})  # writable, as torch.from_numpy wants
    return apply_renames(sd, spec.renames_to_torch)


__all__ = ["ConversionError", "arch_spec", "build", "from_torch", "load_state_dict", "model_args", "template",
           "to_torch"]

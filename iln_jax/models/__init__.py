"""Model registry: ``create(arch, *, norm=..., **official_kwargs) -> flax.linen.Module``."""
from __future__ import annotations

import dataclasses
import importlib

import flax.linen as nn

from iln_jax.errors import ConfigError
from iln_jax.layers.attention import ATTENTION_IMPLS  # noqa: F401
from iln_jax.layers.conv import CONV_IMPLS  # noqa: F401
from iln_jax.layers.norm_registry import NormLike, registered_norms
from iln_jax.models.checks import check_model
from iln_jax.models.stacking import REMAT_POLICIES  # noqa: F401
from iln_jax.models.variants import VARIANTS, variant_arch, variant_kwargs  # noqa: F401

# arch name -> "module:Class"; imported lazily so one backbone's import cost is not everyone's.
_ARCHS = {
    "swinir": "iln_jax.models.swinir:SwinIR",
    "restormer": "iln_jax.models.restormer:Restormer",
    "hint": "iln_jax.models.hint:HINT",
    "hat": "iln_jax.models.hat:HAT",
    "drct": "iln_jax.models.drct:DRCT",
}


class UnknownArgumentError(ConfigError, TypeError):
    """A keyword argument the architecture's constructor does not have."""


def archs() -> tuple[str, ...]:
    return tuple(_ARCHS)


def model_class(arch: str) -> type[nn.Module]:
    """The Flax class registered as ``arch``; a one-line ConfigError naming the valid ones otherwise."""
    if arch not in _ARCHS:
        raise ConfigError(f"Unknown arch {arch!r}; valid archs: {', '.join(_ARCHS)}")
    module, cls = _ARCHS[arch].split(":")
    return getattr(importlib.import_module(module), cls)


def constructor_args(arch: str) -> tuple[str, ...]:
    """The keyword arguments ``create(arch, ...)`` accepts (the module's dataclass fields)."""
    cls = model_class(arch)
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))


def create(arch: str, *, norm: NormLike = "layernorm", **kwargs) -> nn.Module:
    """Build a backbone by name with the official PyTorch constructor's keyword arguments.

    Lists are accepted where PyTorch takes lists (``depths``, ``num_heads``); they are stored as
    tuples so the module stays hashable. Unknown arguments raise, listing the valid ones; values
    the model cannot be built with raise :class:`ConfigError` before anything is traced
    (``iln_jax/models/checks.py``).

    Execution options (same function, other program): ``scan_layers=True`` scans the repeated
    blocks and identical groups (variables stacked; ``iln_jax.models.scan_layout`` maps them to the
    official names), ``remat_policy`` (one of ``REMAT_POLICIES``; the official
    ``use_checkpoint=True`` means ``"block"``) recomputes blocks in the backward pass,
    ``attention_impl`` (``ATTENTION_IMPLS``) chooses the attention kernel and ``conv_impl``
    (``CONV_IMPLS``) the formulation of the convolutions (``iln_jax/layers/conv.py``).

    ``norm`` is a registered name, an import path ``"package.module:attr"`` or a ``NormSpec``
    (``iln_jax.layers.norm_registry``).
    """
    cls = model_class(arch)
    if "norm_layer" in kwargs:
        raise ConfigError("norm_layer is PyTorch's class argument; choose a norm with norm=... "
                          f"(a name: {', '.join(registered_norms())}; an import path 'module:attr'; a NormSpec)")
    valid = constructor_args(arch)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise UnknownArgumentError(f"Unknown argument(s) for {arch}: {unknown}; valid: {', '.join(valid)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    module = cls(norm=norm, **kwargs)
    check_model(arch, module)
    return module

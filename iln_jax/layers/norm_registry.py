"""Which norm a model uses: the registry of names, import paths and :class:`NormSpec`.

``norm=`` (``models.create`` and the config key ``model.norm``) takes

* a registered name: the built-in grid (``iln_jax.layers.norms.BUILTIN_NORMS``) and whatever
  :func:`register_norm` added since (the registry is live: every check reads it);
* an import path ``"package.module:attr"``, where ``attr`` is a Flax module class (used in both
  slots), a :class:`NormSpec`, or a parameter-free function ``f(x) -> (y, branch_scale)``
  (wrapped in :class:`FunctionNorm`); the current directory is importable, as for ``python -m``;
* (in Python) a :class:`NormSpec`.

A norm module maps ``x`` (``(B, ..., C)``) to ``(normalized, branch_scale)``. A module that declares
a ``train`` and/or ``axis_name`` field receives the model's train flag and, under ``pmap``, the
device axis to average statistics over (as BatchNorm does); one with an ``eps`` field receives the
model's ``norm_eps`` when it is set. Variables in collections other than ``params`` are model
state: updated in training (``mutable``), checkpointed and restored with the run (and stacked
with ``scan_layers``). Create them in every mode, as BatchNorm does: the model is initialized with
``train=False``, and only the collections that exist after ``init`` are mutable in training.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import sys
from typing import Callable, Optional, Union

import flax.linen as nn

from iln_jax.errors import ConfigError
from iln_jax.layers.norms import BUILTIN_NORMS, ModuleDef, NormSpec


class FunctionNorm(nn.Module):
    """A parameter-free norm given as a function ``fn(x) -> (y, branch_scale)``."""

    fn: Callable

    @nn.compact
    def __call__(self, x):
        out = self.fn(x)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"norm function {_qualname(self.fn)} must return (normalized, branch_scale); "
                            f"got {type(out).__name__}")
        return out


NormLike = Union[str, NormSpec]

_REGISTRY: dict[str, NormSpec] = dict(BUILTIN_NORMS)


def register_norm(name: str, branch, outer=None) -> NormSpec:
    """Add ``name`` to the registry: ``branch``/``outer`` are module classes (or factories, or
    parameter-free functions); ``outer=None`` uses ``branch`` in both slots. Re-registering a name
    replaces it; a built-in name cannot be replaced."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigError(f"register_norm: name must be a non-empty string without ':', got {name!r}")
    if name in BUILTIN_NORMS:
        raise ConfigError(f"register_norm: {name!r} is a built-in norm and cannot be replaced")
    spec = NormSpec(name, _as_factory(branch, name), None if outer is None else _as_factory(outer, name))
    _REGISTRY[name] = spec
    return spec


def registered_norms() -> tuple[str, ...]:
    """Every registered name, built-ins first."""
    return tuple(_REGISTRY)


def is_builtin(norm: NormLike) -> bool:
    return isinstance(norm, str) and norm in BUILTIN_NORMS


def norm_label(norm: NormLike) -> str:
    """A printable name: the registered name or import path, or the spec's name."""
    return norm.name if isinstance(norm, NormSpec) else str(norm)


def resolve_norm(norm: NormLike, *, key: str = "norm") -> NormSpec:
    """The :class:`NormSpec` of a name, import path or spec; a bad one is a one-line
    :class:`ConfigError` naming ``key``."""
    if isinstance(norm, NormSpec):
        return norm
    if not isinstance(norm, str):
        raise ConfigError(f"{key}={norm!r}: expected a norm name, an import path 'module:attr' or a NormSpec")
    if norm in _REGISTRY:
        return _REGISTRY[norm]
    if ":" not in norm:
        raise ConfigError(f"Unknown {key} {norm!r}; valid norms: {', '.join(_REGISTRY)}, "
                          "or an import path 'package.module:attr'")
    return _import_norm(norm, key)


@functools.lru_cache(maxsize=None)
def _import_norm(path: str, key: str) -> NormSpec:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}={path!r}: expected 'package.module:attr'")
    cwd = os.getcwd()
    if cwd not in sys.path:  # as `python -m` does: a norms file next to the command is importable
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{key}={path!r}: cannot import module {module_name!r} ({e})") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(f"{key}={path!r}: importing {module_name!r} failed: {type(e).__name__}: {e}") from None
    value = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise ConfigError(f"{key}={path!r}: module {module_name!r} has no attribute {attr!r}")
        value = getattr(value, part)
    if isinstance(value, NormSpec):
        return dataclasses.replace(value, name=path)
    try:
        return NormSpec(path, _as_factory(value, path))
    except ConfigError as e:
        raise ConfigError(f"{key}={path!r}: {e}") from None


def _as_factory(value, where: str) -> ModuleDef:
    """A module class or factory as it is; a plain function wrapped in :class:`FunctionNorm`."""
    cls = value.func if isinstance(value, functools.partial) else value
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        return value
    if callable(value) and not isinstance(value, type):
        return functools.partial(FunctionNorm, fn=value)
    raise ConfigError(f"{_qualname(value)} is not a norm: expected a flax.linen.Module class, a NormSpec "
                      "or a function f(x) -> (normalized, branch_scale)")


def _qualname(value) -> str:
    return getattr(value, "__qualname__", None) or type(value).__name__


def module_class(factory: ModuleDef) -> type:
    """The module class behind a factory (``functools.partial`` chains unwrapped)."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory


def make_norm(norm: NormLike, *, train: bool = False, axis_name: Optional[str] = None,
              eps: Optional[float] = None) -> NormSpec:
    """Resolve a norm once, binding ``train`` / ``axis_name`` / ``eps`` to every module that
    declares the field."""
    spec = resolve_norm(norm)

    def bind(factory):
        fields = getattr(module_class(factory), "__dataclass_fields__", {})
        kwargs = {}
        if "train" in fields:
            kwargs["train"] = train
        if "axis_name" in fields:
            kwargs["axis_name"] = axis_name
        if eps is not None and "eps" in fields:
            kwargs["eps"] = eps
        return functools.partial(factory, **kwargs) if kwargs else factory

    return NormSpec(name=spec.name, branch=bind(spec.branch), outer=bind(spec.outer))

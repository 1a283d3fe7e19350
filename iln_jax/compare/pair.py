"""The official PyTorch model and its iln_jax twin, built from the command line's description.

Both comparisons (one forward pass, a whole training run) start here: the official class is
imported from the user's checkout and built with ``--kwargs``; its weights (seeded random, or a
``.pth``) become the Flax variables through the strict converter (``--arch``) or, for a model
outside the converter, the generic naming rule (``--flax-class`` + ``--sequences``). What cannot
be built is a :class:`CompareError` naming the flag and what was expected.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Optional

import flax
import jax
import numpy as np

from iln_jax.compare import official_imports
from iln_jax.dependencies import missing_package, require
from iln_jax.errors import IlnJaxError, one_line


class CompareError(IlnJaxError, ValueError):
    """A comparison that cannot be set up (a class not found, arguments it rejects, weights that do not fit)."""


def import_object(spec: str, repo: Optional[str] = None):
    """``module.path:Name`` (importable from ``repo``) or ``path/to/file.py:Name``."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise CompareError(f"{spec!r} is not 'module.path:Class' or 'file.py:Class'")
    if repo:
        repo = os.path.abspath(os.path.expanduser(repo))
        if not os.path.isdir(repo):
            raise CompareError(f"--torch-repo {repo} is not a folder: clone the official repository "
                               f"(e.g. https://github.com/JingyunLiang/SwinIR) and give its path")
        if repo not in sys.path:
            sys.path.insert(0, repo)
    if target.endswith(".py"):
        path = target if os.path.isabs(target) or not repo else os.path.join(repo, target)
        if not os.path.isfile(path):
            raise CompareError(f"{spec}: no file {path}")
        try:
            module = official_imports.load_file(Path(path))
        except ImportError as e:
            raise CompareError(f"{spec}: importing {path} failed: {one_line(e)}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            if missing_package(e) is not None:  # an optional package of this project: its own one-line message
                raise
            hint = "" if repo else "; give --torch-repo, the checkout of the official repository"
            if "basicsr" in str(e) or "torchvision" in str(e):
                hint += "; official HAT/DRCT import basicsr, which needs torchvision < 0.17 (BasicSR #533)"
            raise CompareError(f"{spec}: cannot import {target!r} (from {repo or 'sys.path'}): "
                               f"{one_line(e, 200)}{hint}") from None
    if not hasattr(module, name):
        raise CompareError(f"{target} has no {name!r}")
    return getattr(module, name)


def construct(cls, kwargs: dict, flag: str):
    """``cls(**kwargs)``; arguments the class rejects are one error naming them."""
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise CompareError(f"{flag}: {cls.__name__} does not accept these arguments ({e})") from None
    except ValueError:  # no signature to inspect (a C extension): let the call decide
        pass
    try:
        return cls(**kwargs)
    except KeyError as e:  # a constructor reading kwargs[...] that --kwargs does not give
        raise CompareError(f"{flag}: {cls.__name__}({_short(kwargs)}) failed: it reads the argument "
                           f"{e.args[0]!r}, which {flag} does not give; add it") from None
    except (TypeError, ValueError, AssertionError) as e:
        raise CompareError(f"{flag}: {cls.__name__}({_short(kwargs)}) failed: {type(e).__name__}: "
                           f"{one_line(e) or 'no message'}") from None


def _short(kwargs: dict, limit: int = 160) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def generic_from_torch(module, state_dict: dict, sequences, sample_shape) -> dict:
    """Flax variables for ``module`` from a PyTorch state_dict by the generic naming rule (every
    variable must be present with its shape; extra keys such as buffers are ignored)."""
    from iln_jax.convert import template
    flat, missing, bad = {}, [], []
    for leaf, shape in template(module, sample_shape, sequences):
        if leaf.torch_key not in state_dict:
            missing.append(leaf.torch_key)
            continue
        value = np.asarray(state_dict[leaf.torch_key])
        if value.shape != leaf.torch_shape(shape):
            bad.append(f"{leaf.torch_key}: expected {leaf.torch_shape(shape)}, got {value.shape}")
            continue
        flat[(leaf.collection, *leaf.flax_path)] = np.asarray(leaf.from_torch(value), np.float32)
    if missing or bad:
        raise CompareError(f"the state_dict does not fit {type(module).__name__}: missing {missing}, shapes {bad}")
    return jax.device_put(flax.traverse_util.unflatten_dict(flat))  # as convert.from_torch: no program per shape


@dataclasses.dataclass
class ModelPair:
    """An official PyTorch model, its Flax twin and the Flax variables holding the same weights."""

    torch_model: Any
    flax_module: Any
    variables: dict
    sequences: list[str]
    arch: Optional[str]
    kwargs: dict
    flax_kwargs: dict
    sample_shape: tuple[int, ...]

    def torch_named(self, variables: dict) -> dict[str, np.ndarray]:
        """Flax variables -> arrays under the official state_dict names, in the PyTorch layout."""
        if self.arch:
            from iln_jax import convert
            return convert.to_torch(self.arch, variables, **self.kwargs, **self.flax_kwargs)
        from iln_jax.convert import template
        flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
        return {leaf.torch_key: np.asarray(leaf.to_torch(np.asarray(flat[(leaf.collection, *leaf.flax_path)])))
                for leaf, _ in template(self.flax_module, self.sample_shape, frozenset(self.sequences))}


def in_channels(kwargs: dict, override: Optional[int] = None) -> int:
    return int(override or kwargs.get("in_chans", kwargs.get("inp_channels", 3)))


def build_pair(*, torch_class: str, torch_repo: Optional[str], kwargs: dict, flax_kwargs: dict,
               arch: Optional[str], flax_class: Optional[str], sequences: list[str], sample_shape: tuple[int, ...],
               seed: int = 0, pth: Optional[str] = None, param_key: Optional[str] = None) -> ModelPair:
    """Build the official model (seeded init or ``pth``) and convert its weights to the Flax twin."""
    torch = require("torch", "python -m iln_jax.compare")
    from iln_jax import convert
    if bool(arch) == bool(flax_class):
        raise CompareError("give exactly one of --arch (a converter: swinir, hat, hat_iln, drct, restormer, hint) "
                           "and --flax-class (file.py:Class, generic name mapping)")
    official_imports.install_stand_ins()
    torch_cls = import_object(torch_class, torch_repo)
    torch.manual_seed(seed)
    torch_model = construct(torch_cls, kwargs, "--kwargs")
    if pth:
        sd = convert.load_state_dict(pth, param_key=param_key)
        try:
            torch_model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
        except RuntimeError as e:
            raise CompareError(f"--pth {pth} does not fit {torch_cls.__name__}: {one_line(e)}") from None
    sd = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    if arch:
        try:
            convert.arch_spec(arch)
        except ValueError as e:
            raise CompareError(f"--arch: {e}") from None
        try:
            flax_module, variables = convert.from_torch(arch, sd, **kwargs, **flax_kwargs)
        except convert.ConversionError as e:
            problems = " ".join(str(e).split())
            raise CompareError(f"--torch-class {torch_class} does not convert as --arch {arch}: "
                               f"{problems if len(problems) < 600 else problems[:597] + '...'}") from None
        except TypeError as e:
            raise CompareError(f"--arch {arch} does not accept --kwargs/--flax-kwargs: {one_line(e)}") from None
        sequences = list(convert.arch_spec(arch).sequences)
    else:
        flax_module = construct(import_object(flax_class), {**kwargs, **flax_kwargs}, "--flax-class")
        variables = generic_from_torch(flax_module, sd, sequences, sample_shape)
    return ModelPair(torch_model=torch_model, flax_module=flax_module, variables=variables, sequences=list(sequences),
                     arch=arch, kwargs=dict(kwargs), flax_kwargs=dict(flax_kwargs), sample_shape=tuple(sample_shape))

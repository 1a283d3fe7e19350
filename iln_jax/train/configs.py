"""Loading and checking run configs (the files live in the repository's ``configs/``)."""
from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import ml_collections

from iln_jax.data.config import check_config
from iln_jax.errors import ConfigError
from iln_jax.layers.norm_registry import resolve_norm
from iln_jax.train.optim import OPTIMIZERS, SCHEDULES
from iln_jax.train.parallel import MODES
from iln_jax.train.resume import parse_init_from
from iln_jax.train.step import COMPUTE_DTYPES, PIXEL_LOSSES

EVAL_WEIGHTS = ("ema", "raw", "both")
# The checkout: the run configs are its top-level ``configs/`` package.
REPOSITORY = Path(__file__).resolve().parents[2]
CONFIGS = REPOSITORY / "configs"


def load_config(spec: str, *, lock: bool = True) -> ml_collections.ConfigDict:
    """``"configs/swinir.py:task=sr,tiny=1"`` -> the (locked) ConfigDict, as ``--config`` does."""
    path, _, arg = spec.partition(":")
    config = config_module(config_path(path)).get_config(arg or None)
    if lock:
        config.lock()
    return config


def config_path(path: str) -> Path:
    """The config file ``path`` names: as given (absolute, or from the current directory), else from
    the repository, so that ``configs/swinir.py`` works from any directory."""
    given = Path(path).expanduser()
    for candidate in (given,) if given.is_absolute() else (given, REPOSITORY / given):
        if candidate.is_file():
            return candidate.resolve()
    where = "" if given.is_absolute() else f" (looked in {Path.cwd()} and in {REPOSITORY})"
    raise ConfigError(f"config file {path!r} not found{where}")


def config_module(path: Path) -> types.ModuleType:
    """Run the config file at ``path`` as a fresh module, without touching ``sys.path``.

    Config files share code as a package: the repository's say ``from configs import common``. A
    file in a package folder (one with ``__init__.py``) runs as a module of that package, imported
    from that folder, so ``configs`` (or a user's own package of configs) is the file's own folder.
    A file outside any package, such as one next to the command, can import the repository's
    ``configs``.
    """
    folder = path.parent
    if (folder / "__init__.py").is_file():
        return _execute(f"{_import_package(folder)}.{path.stem}", path)
    if CONFIGS.name not in sys.modules and CONFIGS.is_dir():
        _import_package(CONFIGS)
    return _execute(f"_iln_config_{path.stem}", path)


def _import_package(folder: Path) -> str:
    """Import the package in ``folder`` under the folder's name (once); that name."""
    name = folder.name
    loaded = sys.modules.get(name)
    if loaded is None:
        _execute(name, folder / "__init__.py", package=folder)
    elif folder not in (Path(p).resolve() for p in getattr(loaded, "__path__", ())):
        raise ConfigError(f"config package {folder}: another {name!r} is imported already "
                          f"({getattr(loaded, '__file__', None) or loaded!r}); rename one of the two folders")
    return name


def _execute(name: str, path: Path, package: Path | None = None) -> types.ModuleType:
    """Run ``path`` as module ``name`` (a package rooted at ``package``), registered as an import
    registers it: what the file defines can find its module."""
    locations = None if package is None else [str(package)]
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _choice(value, valid, key):
    if value not in valid:
        raise ConfigError(f"Unknown {key} {value!r}; valid: {', '.join(valid)}")


def validate_config(c: ml_collections.ConfigDict) -> None:
    """Fail early, before anything is compiled or written, on values the loop cannot use
    (:class:`ConfigError` naming the key)."""
    try:
        check_config(c.data)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    resolve_norm(c.model.norm, key="model.norm")
    _choice(c.train.parallel, MODES, "train.parallel")
    _choice(c.optim.optimizer, OPTIMIZERS, "optim.optimizer")
    _choice(c.optim.schedule, SCHEDULES, "optim.schedule")
    _choice(c.loss.pixel, PIXEL_LOSSES, "loss.pixel")
    _choice(c.eval.weights, EVAL_WEIGHTS, "eval.weights")
    _choice(c.train.compute_dtype, tuple(COMPUTE_DTYPES), "train.compute_dtype")
    for key in ("train.num_steps", "data.batch_size", "train.log_every", "train.checkpoint_every",
                "train.max_to_keep", "train.prefetch"):
        section, name = key.split(".")
        if int(c[section][name]) < 1:
            raise ConfigError(f"{key} must be >= 1, got {c[section][name]}")
    for key in ("train.diagnostics_every", "train.diagnostics_images"):
        section, name = key.split(".")
        if int(c[section][name]) < 0:
            raise ConfigError(f"{key} must be >= 0, got {c[section][name]}")
    if not 0.0 <= c.optim.ema_decay < 1.0:
        raise ConfigError(f"optim.ema_decay must be in [0, 1), got {c.optim.ema_decay}")
    if c.train.sigterm_grace_seconds < 0:
        raise ConfigError(f"train.sigterm_grace_seconds must be >= 0, got {c.train.sigterm_grace_seconds}")
    if c.train.init_from:
        parse_init_from(c.train.init_from)


def parse_overrides(items: list[str]) -> dict:
    """``["train.num_steps=300", "optim.lr=1e-3"]`` -> ``{"train.num_steps": 300, ...}``."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. train.num_steps=300)")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def apply_overrides(config, overrides: dict) -> None:
    """Set dotted keys on a locked config; keys that do not exist are errors naming them."""
    for key, value in overrides.items():
        node, parts = config, key.split(".")
        for part in parts[:-1]:
            if part not in node:
                raise ConfigError(f"--set {key}: the config has no {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"--set {key}: the config has no {parts[-1]!r}")
        try:
            node[parts[-1]] = tuple(value) if isinstance(value, list) else value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--set {key}={value!r}: {e}") from None

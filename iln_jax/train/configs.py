"""Loading and checking run configs (the files live in the repository's ``configs/``)."""
from __future__ import annotations

import importlib.util
import sys
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


def load_config(spec: str, *, lock: bool = True) -> ml_collections.ConfigDict:
    """``"configs/swinir.py:task=sr,tiny=1"`` -> the (locked) ConfigDict, as ``--config`` does."""
    path, _, arg = spec.partition(":")
    path = Path(path).absolute()
    root = str(path.parent.parent)  # config files import ``configs.common``
    if root not in sys.path:
        sys.path.insert(0, root)
    module_spec = importlib.util.spec_from_file_location(f"_iln_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    if lock:
        config.lock()
    return config


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

"""Loading a model to evaluate: an Orbax training run (EMA or raw weights) or an official .pth.

* :func:`load_run` reads a work directory written by ``iln_jax.train`` (``checkpoints/<step>``
  through ``iln_jax.train.checkpoint.load_state``, and the run's config). The model is built from
  the saved config; ``arch`` / ``norm`` / constructor arguments given by the caller must agree with
  it, else :class:`CheckpointMismatchError` names every field that differs. Without a saved config
  the caller's arch/norm/kwargs are used and the parameter tree is checked against the model's.
* :func:`load_pth` converts an official PyTorch checkpoint with ``iln_jax.convert.from_torch``;
  when its keys do not fit, the error names the architecture the keys look like.

Note that LayerNorm, LN*, i-LN and InstanceNorm have identical parameter trees, so only a saved
config can tell which norm a checkpoint was trained with.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import flax
import jax
import numpy as np

from iln_jax import convert, models
from iln_jax.convert.state_dict import load_state_dict
from iln_jax.models.shapes import variable_shapes
from iln_jax.errors import CheckpointError
from iln_jax.train.checkpoint import checkpoint_directory, load_config, load_state


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the requested model; the message names what differs."""


@dataclasses.dataclass
class LoadedModel:
    module: Any
    variables: dict
    arch: str
    norm: str
    source: str                    # human-readable description of where the weights came from
    config: Optional[dict] = None  # the training run's config, when there is one
    step: Optional[int] = None
    weights: str = "params"

    def data_defaults(self) -> dict:
        """Task settings of the training run (task, scale, noise_sigma, jpeg_quality, channels)."""
        d = (self.config or {}).get("data", {})
        return {k: d[k] for k in ("task", "scale", "noise_sigma", "jpeg_quality", "channels") if k in d}


def _tree_paths(tree) -> dict[str, tuple]:
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
    return {"/".join(map(str, k)): tuple(np.shape(v)) for k, v in flat.items()}


def check_tree(module, variables: dict, sample_shape: tuple[int, ...], what: str) -> None:
    """Raise naming missing / unexpected / mis-shaped variables of ``variables`` for ``module``."""
    expected = variable_shapes(module, sample_shape)
    want, have = _tree_paths(expected), _tree_paths(variables)
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    shapes = sorted(f"{k}: model {want[k]}, checkpoint {have[k]}" for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or shapes:
        parts = [f"{title} ({len(items)}): " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else "")
                 for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes))
                 if items]
        hint = guess_norm_from_tree(have)
        raise CheckpointMismatchError(
            f"{what} does not fit {type(module).__name__}(norm={getattr(module, 'norm', '?')!r}):\n  "
            + "\n  ".join(parts) + (f"\n  (its variables look like norm={hint!r})" if hint else ""))


def guess_norm_from_tree(paths) -> Optional[str]:
    """The norm family a parameter tree's names point at (None when they do not tell)."""
    names = {p.rsplit("/", 1)[-1] for p in paths}
    if any(p.startswith("batch_stats/") for p in paths):
        return "batchnorm"
    if "alpha" in names:
        return "rezero"
    if "branch_scale" in names:
        return "layerscale"
    return None


def _sample_shape(module, channels: int) -> tuple[int, int, int, int]:
    side = getattr(module, "img_size", 16) if getattr(module, "ape", False) else 16
    return (1, side, side, getattr(module, "in_chans", getattr(module, "inp_channels", channels)))


def _norm_kwargs(kwargs: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def load_run(workdir: str | Path, *, step: Optional[int] = None, weights: str = "ema",
             arch: Optional[str] = None, norm: Optional[str] = None, model_kwargs: Optional[dict] = None) -> LoadedModel:
    """The model and its EMA (``weights="ema"``, falling back to raw) or raw weights of a run."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    ckpt_dir = checkpoint_directory(workdir)
    state, step = load_state(ckpt_dir, step)
    config = load_config(ckpt_dir, step)
    requested = {"arch": arch, "norm": norm, **{f"kwargs.{k}": v for k, v in (model_kwargs or {}).items()}}
    if config is not None:
        saved = {"arch": config["model"]["arch"], "norm": config["model"]["norm"],
                 **{f"kwargs.{k}": v for k, v in config["model"].get("kwargs", {}).items()}}
        diffs = [f"{k}: checkpoint {saved.get(k)!r}, requested {v!r}" for k, v in requested.items()
                 if v is not None and _norm_value(saved.get(k)) != _norm_value(v)]
        if diffs:
            raise CheckpointMismatchError(f"{ckpt_dir} step {step} was trained with a different model:\n  "
                                          + "\n  ".join(diffs))
        arch, norm = saved["arch"], saved["norm"]
        kwargs = _norm_kwargs({k: v for k, v in config["model"].get("kwargs", {}).items()})
    else:
        if arch is None:
            raise CheckpointMismatchError(f"{ckpt_dir} has no saved config: pass the arch (and norm, kwargs)")
        norm = norm or "layernorm"
        kwargs = _norm_kwargs(model_kwargs or {})
    module = models.create(arch, norm=norm, **kwargs)
    params = state.get("ema_params") if weights == "ema" else None
    used = "ema_params" if params is not None else "params"
    if params is None:
        params = state["params"]
    variables = {"params": params, **(state.get("model_state") or {})}
    check_tree(module, variables, _sample_shape(module, 3), f"{ckpt_dir} step {step} ({used})")
    variables = jax.device_put(variables)  # jnp.asarray of a NumPy leaf compiles a program per shape
    return LoadedModel(module, variables, arch, norm, f"{ckpt_dir} step {step} ({used})", config, step, used)


def _norm_value(v):
    if isinstance(v, (list, tuple)):
        return tuple(_norm_value(x) for x in v)
    return v


# Substrings of official state_dict keys that identify an architecture.
_ARCH_SIGNATURES = (
    ("hat_iln", ("overlap_attn", "norm1.gamma")),
    ("hat", ("overlap_attn",)),
    ("drct", ("swin1.", "adjust1")),
    ("hint", ("inter_modulator",)),
    ("restormer", ("encoder_level1",)),
    ("swinir", ("residual_group.blocks",)),
)


def guess_arch(keys) -> Optional[str]:
    keys = list(keys)
    for arch, needles in _ARCH_SIGNATURES:
        if all(any(n in k for k in keys) for n in needles):
            return arch
    return None


def load_pth(path: str | Path, arch: str, *, param_key: Optional[str] = None, norm: Optional[str] = None,
             **kwargs) -> LoadedModel:
    """An official checkpoint through the strict converter (``params_ema`` preferred)."""
    sd = load_state_dict(str(path), param_key=param_key)
    if norm is not None:
        kwargs["norm"] = norm
    try:
        module, variables = convert.from_torch(arch, sd, **kwargs)
    except convert.ConversionError as e:
        guess = guess_arch(sd)
        hint = f"\n  (the keys look like arch {guess!r})" if guess and guess != arch else ""
        raise CheckpointMismatchError(f"{path}: {e}{hint}") from None
    return LoadedModel(module, variables, arch, module.norm, f"{path}", weights=param_key or "auto")

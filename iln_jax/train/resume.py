"""What a run starts from, decided before anything is restored.

**Resuming** its own work directory: the config saved with the checkpoint is compared with the
new one first. Keys that change the model or what its weights mean (:data:`MODEL_KEYS`: the
architecture, norm and every constructor argument except the compute-only ones (rematerialisation,
the attention implementation) and the variable layout (``scan_layers``: the restored state is
converted to the new layout, exactly), the task, channels, and the scale / noise level / JPEG quality of the task) refuse with one line per
key and what to do instead; every other change (schedule,
steps, logging, evaluation, data loading) is allowed, printed, and appended to
``<workdir>/config_changes.jsonl`` (``config.json`` then holds the new config). The saved state's
tree (from its metadata) is then compared with the one this config builds, so an optimizer or
EMA change that alters the state's structure also refuses before the restore, naming the arrays.
A key present on one side only (a key added or removed by a newer version of this code) is
allowed and printed.

**Starting from another run's weights** (``train.init_from = "<workdir or checkpoints dir>[:step]"``,
``train.py --init_from``): a new run, in a new work directory, whose parameters, EMA parameters
and model state (BatchNorm statistics) are copied from that checkpoint (its newest complete one
by default); the optimizer, the step counter, the rng and the data stream start fresh. The
model may differ in anything that keeps the parameter tree (a different norm, task or data);
a tree that does not fit is an error naming the arrays. Once the new run has checkpoints of its
own, re-running the same command resumes it and ``init_from`` is not read again.
"""
from __future__ import annotations

import json
import time
from typing import Any, Optional

import jax
import numpy as np
from etils import epath

from iln_jax import paths
from iln_jax.errors import CheckpointError, ConfigError, ResumeConfigError
from iln_jax.models import scan_layout
from iln_jax.train.checkpoint import checkpoint_directory, load_config, load_state

MODEL_KEYS = ("model", "data.task", "data.scale", "data.channels", "data.noise_sigma", "data.jpeg_quality")
# Model arguments that change how the forward pass is computed, not the weights.
COMPUTE_ONLY_KEYS = ("model.kwargs.use_checkpoint", "model.kwargs.remat_policy", "model.kwargs.attention_impl",
                     "model.kwargs.conv_impl")
# Model arguments that change how the weights are laid out, not what they are: the restored state
# is converted (``iln_jax.train.state.relayout_state``).
LAYOUT_KEYS = ("model.kwargs.scan_layers",)
# Degradation keys that only matter for one task.
_TASK_OF_KEY = {"data.scale": "sr", "data.noise_sigma": "dn", "data.jpeg_quality": "car"}
CHANGES_FILE = "config_changes.jsonl"
_ABSENT = "<absent>"


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, new value)`` for every leaf that differs."""
    a, b = flatten(saved), flatten(new)
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b)) if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def is_model_key(key: str, task: Optional[str] = None) -> bool:
    """Whether changing ``key`` changes the model or what its weights mean (for ``task``)."""
    if key in COMPUTE_ONLY_KEYS + LAYOUT_KEYS or (task is not None and _TASK_OF_KEY.get(key, task) != task):
        return False
    return any(key == k or key.startswith(k + ".") for k in MODEL_KEYS)


def change_line(key: str, old, new) -> str:
    return f"{key}: {old!r} -> {new!r}"


def check_resume_config(saved: Optional[dict], new: dict, *, workdir: paths.PathLike,
                        step: int) -> list[tuple[str, Any, Any]]:
    """Raise :class:`ResumeConfigError` if resuming would load the weights into another model;
    else the allowed changes (see :func:`change_line`)."""
    if saved is None:
        return []
    changes = config_changes(saved, new)
    task = new.get("data", {}).get("task")
    refused = [c for c in changes if is_model_key(c[0], task) and _ABSENT not in (c[1], c[2])]
    if refused:
        raise ResumeConfigError(
            f"cannot resume {workdir} (checkpoint step {step}) with a different model; changed:\n  "
            + "\n  ".join(change_line(*c) for c in refused)
            + f"\nTo train this config, use a new --workdir; to start it from these weights, add "
              f"--init_from={workdir}:{step} (config key train.init_from) with a new --workdir")
    return changes


def log_config_changes(workdir: epath.Path, step: int, changes: list[tuple[str, Any, Any]]) -> None:
    """Append the allowed changes of a resume to ``config_changes.jsonl``."""
    record = {"step": step, "time": time.time(), "changes": {k: [old, new] for k, old, new in changes}}
    paths.append_text(workdir / CHANGES_FILE, json.dumps(record, default=str) + "\n")


def _path_name(entry) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_table(tree) -> dict[str, Any]:
    """``{"params/layers_0/.../kernel": leaf}`` for any pytree (TrainState, Orbax metadata, dicts)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_path_name(e) for e in path): leaf for path, leaf in flat}


def tree_differences(have: dict[str, Any], want: dict[str, Any], limit: int = 6) -> list[str]:
    """Lines naming the arrays missing from / unexpected in ``have`` or shaped differently."""
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    shapes = sorted(f"{k} {tuple(have[k].shape)} vs {tuple(want[k].shape)}" for k in set(want) & set(have)
                    if tuple(have[k].shape) != tuple(want[k].shape))
    lines = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape (saved vs this config)", shapes)):
        if items:
            lines.append(f"{title} ({len(items)}): " + ", ".join(items[:limit]) + (" ..." if len(items) > limit else ""))
    return lines


def check_state_tree(saved_metadata, abstract_state, *, workdir: paths.PathLike, step: int) -> None:
    """Refuse before restoring when the saved state's arrays do not fit this config's state."""
    lines = tree_differences(leaf_table(saved_metadata), leaf_table(abstract_state))
    if lines:
        raise ResumeConfigError(
            f"cannot resume {workdir} (checkpoint step {step}): its saved state does not fit this config's "
            f"(optimizer, grad_clip, EMA or model changed?):\n  " + "\n  ".join(lines)
            + "\nUse a new --workdir (with --init_from to start from its weights)")


# -- train.init_from ------------------------------------------------------------------------------

def parse_init_from(spec: str) -> tuple[str, Optional[int]]:
    """``"runs/a:400"`` -> ``("runs/a", 400)``; ``"runs/a"`` -> ``("runs/a", None)``."""
    path, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and path:
        return path, int(tail)
    if not spec.strip():
        raise ConfigError("train.init_from is empty; expected <work directory or checkpoints dir>[:step]")
    return spec, None


def init_from_weights(spec: str, state, *, workdir: epath.Path, config: dict, model=None):
    """``(state with params / EMA / model state copied from the checkpoint spec, description of
    the source, the model keys in which this config differs from the source run's)``.

    With ``model`` given, weights saved in the other variable layout (``scan_layers``) are
    converted to this model's."""
    path, step = parse_init_from(spec)
    source = checkpoint_directory(path)
    if source.parent == workdir:
        raise ConfigError(f"train.init_from={spec!r} is this run's own work directory; it must name another run")
    if not source.exists():
        raise CheckpointError(f"train.init_from={spec!r}: {source} does not exist")
    saved, step = load_state(source, step)
    source_config = load_config(source, step) or {}
    source_layout = saved_scan_layers(source_config)
    if model is not None and source_layout is not None and source_layout != bool(model.scan_layers):
        saved = _relayout_saved(saved, model.clone(scan_layers=source_layout), model, spec)
    params = _copy_onto(state.params, saved.get("params"), spec, "params")
    ema = state.ema_params
    if ema is not None:
        src_ema = saved.get("ema_params")
        ema = _copy_onto(ema, src_ema if src_ema is not None else saved.get("params"), spec, "ema_params")
    model_state = state.model_state
    if jax.tree.leaves(model_state):
        model_state = _copy_onto(model_state, saved.get("model_state"), spec, "model_state")
    task = config.get("data", {}).get("task")
    notes = [change_line(*c) for c in config_changes(source_config, config)
             if is_model_key(c[0], task)] if source_config else []
    return state.replace(params=params, ema_params=ema, model_state=model_state), f"{source} step {step}", notes


def _relayout_saved(saved: dict, source_model, target_model, spec: str) -> dict:
    """The parameter-like entries of a saved state (host arrays) in ``target_model``'s layout."""
    out = dict(saved)
    try:
        for key in ("params", "ema_params"):
            if saved.get(key) is not None:
                out[key] = scan_layout.params_to_scanned(target_model,
                                                         scan_layout.params_to_unrolled(source_model, saved[key]))
        if jax.tree.leaves(saved.get("model_state")):
            out["model_state"] = scan_layout.to_scanned(target_model,
                                                        scan_layout.to_unrolled(source_model, saved["model_state"]))
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"train.init_from={spec!r}: its weights do not fit this model's layers ({e})") from e
    return out


def _copy_onto(target, source, spec: str, what: str):
    """``source`` (host arrays) in the structure, dtypes and shardings of ``target``."""
    want = leaf_table(target)
    have = leaf_table(source) if source is not None else {}
    lines = tree_differences({k: np.asarray(v) for k, v in have.items()}, want)
    if lines:
        raise CheckpointError(f"train.init_from={spec!r}: its {what} do not fit this model:\n  " + "\n  ".join(lines))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
    out = []
    for path, leaf in leaves:
        value = np.asarray(have["/".join(_path_name(e) for e in path)], dtype=leaf.dtype)
        out.append(jax.make_array_from_callback(value.shape, leaf.sharding, lambda idx, v=value: v[idx]))
    return jax.tree_util.tree_unflatten(treedef, out)


def saved_scan_layers(saved_config: Optional[dict]) -> Optional[bool]:
    """The variable layout a checkpoint holds (its config's ``model.kwargs.scan_layers``)."""
    if not saved_config:
        return None
    return bool(saved_config.get("model", {}).get("kwargs", {}).get("scan_layers", False))

"""The i-LN paper's diagnostics: per-block feature statistics (Fig. 1, 3, 5, 8), captured without
touching model code, and their log ``diagnostics.jsonl``. Training records them every K steps
(``iln_jax.train.hooks.diagnostics``); ``iln_jax.analysis`` plots them and computes them offline.

Every residual block's output (and, with ``level="groups"``/``"all"``, every residual group's) is
captured with Flax's ``capture_intermediates`` -- the model is applied unchanged. For a block
output ``x`` of shape (B, H, W, C), with E the mean over the batch and all spatial positions:

* ``sq_mean``       = E_{b,h,w,c}[x^2], the mean of the squared features (the paper's feature
                      magnitude; LN models drive it towards 1e6, i-LN keeps it near the input's);
* ``mean_sq``       = (E_{b,h,w,c}[x])^2, the squared mean, for comparison (the constant part);
* ``entropy``       = -sum_c p_c log p_c with p_c = E_{b,h,w}[x_c^2] / sum_c' E_{b,h,w}[x_c'^2]:
                      the entropy (nats) of how the feature energy is spread over channels, log C
                      when all channels carry equal energy, 0 when one channel carries all of it
                      (the paper's channel-wise entropy collapse);
* ``entropy_norm``  = entropy / log C, in [0, 1], comparable across widths (DRCT's dense blocks);
* ``max_abs``       = max |x| (fp16 overflows past 65504).

All statistics are computed in float32 whatever the feature dtype. Block names are the Flax
module paths (``layers_0/residual_group/blocks_1``), in forward order.

For training, :func:`make_diagnostics_fn` gives one jitted function
``diag(variables, lq) -> {"<block>/<stat>": scalar}`` to call every K steps; a forward pass on at
most ``max_images`` inputs, i.e. a small fraction of one training step. :class:`DiagnosticsLog`
appends the values to ``<workdir>/diagnostics.jsonl`` (resume-safe) for ``plots.py``.
"""
from __future__ import annotations

import functools
import json
import math
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from etils import epath

from iln_jax import paths, xla_options
from iln_jax.layers.channel_attention import TransformerBlock
from iln_jax.layers.swin import SwinBlock
from iln_jax.models import scan_layout
from iln_jax.models.drct import RDG
from iln_jax.models.hat import OCAB, RHAG
from iln_jax.models.swinir import RSTB

LEVELS = ("blocks", "groups", "all")
STATS = ("sq_mean", "mean_sq", "entropy", "entropy_norm", "max_abs")
DEFAULT_LOG_STATS = ("sq_mean", "entropy", "entropy_norm", "max_abs")
# The residual blocks and residual groups of every backbone (Restormer's and HINT's blocks are
# TransformerBlocks; they have no groups).
BLOCKS = (SwinBlock, TransformerBlock, OCAB)
GROUPS = (RSTB, RHAG, RDG)


def capture_filter(level: str = "blocks") -> Callable[[Any, str], bool]:
    """A ``capture_intermediates`` predicate selecting residual blocks and/or groups."""
    if level not in LEVELS:
        raise ValueError(f"Unknown level {level!r}; valid: {', '.join(LEVELS)}")
    wanted = {"blocks": BLOCKS, "groups": GROUPS, "all": BLOCKS + GROUPS}[level]

    def select(module, method_name: str) -> bool:
        return method_name == "__call__" and isinstance(module, wanted)
    return select


def _feature(output) -> jax.Array:
    """The feature map of a module output (Restormer/HINT blocks return ``(x, carry)``)."""
    for leaf in jax.tree.leaves(output):
        if hasattr(leaf, "ndim") and leaf.ndim >= 3:
            return leaf
    raise ValueError("captured module output holds no feature map")


def capture_features(model, variables: dict, x: jax.Array, *, level: str = "blocks") -> dict[str, jax.Array]:
    """``{block name: output feature (B, H, W, C)}`` from one ``model.apply``.

    Names are the unrolled module paths also for a ``scan_layers`` model, whose captures come
    stacked over the scanned layers and are split here. Unrolled models give them in forward
    order; :func:`forward_order` gives it in every case.
    """
    _, state = model.apply(variables, x, capture_intermediates=capture_filter(level), mutable=["intermediates"])
    flat = flax.traverse_util.flatten_dict(state.get("intermediates", {}))
    if not scan_layout.is_scanned(model):
        return {"/".join(path[:-1]): _feature(value) for path, value in flat.items()}
    out = {}
    for module_path in _module_paths(model):
        scanned, index = model.scan_path(module_path + ("",))
        key = (*scanned[:-1], "__call__")
        if key in flat:
            feature = _feature(flat[key])
            out["/".join(module_path)] = feature[index] if index else feature
    return out


def _module_paths(model) -> list[tuple[str, ...]]:
    """Every module path of the unrolled model that holds variables (and its parents)."""
    paths = dict.fromkeys(tuple(p[1:i]) for p in scan_layout.unrolled_paths(model) for i in range(2, len(p)))
    return list(paths)


def channel_energy(x: jax.Array) -> jax.Array:
    """E[x_c^2] over every axis but the last (channels), in float32."""
    x = jnp.asarray(x).astype(jnp.float32)
    return jnp.mean(jnp.square(x), axis=tuple(range(x.ndim - 1)))


def channel_entropy(energy: jax.Array) -> jax.Array:
    """-sum_c p_c log p_c with p_c = energy_c / sum(energy) (nats)."""
    p = energy / jnp.sum(energy)
    return -jnp.sum(jax.scipy.special.xlogy(p, p))


def feature_stats(x: jax.Array) -> dict[str, jax.Array]:
    """The statistics of :data:`STATS` for one feature map (see the module docstring)."""
    x32 = jnp.asarray(x).astype(jnp.float32)
    energy = channel_energy(x32)
    entropy = channel_entropy(energy)
    return {
        "sq_mean": jnp.mean(energy),
        "mean_sq": jnp.square(jnp.mean(x32)),
        "entropy": entropy,
        "entropy_norm": entropy / math.log(x32.shape[-1]),
        "max_abs": jnp.max(jnp.abs(x32)),
    }


def block_stats(model, variables: dict, x: jax.Array, *, level: str = "blocks") -> dict[str, dict[str, jax.Array]]:
    """``{block: {stat: scalar}}`` for one batch, in forward order.

    Jittable with ``model`` closed over, but note that ``jit`` returns dicts with sorted keys
    (``layers_10`` before ``layers_2``); :func:`make_stats_fn` restores the forward order.
    """
    return {name: feature_stats(f) for name, f in capture_features(model, variables, x, level=level).items()}


def forward_order(model, variables: dict, x, *, level: str = "blocks") -> list[str]:
    """Captured module names in the order the forward pass calls them (an abstract trace, no FLOPs)."""
    names: list[str] = []
    if scan_layout.is_scanned(model):  # the scan body is traced once: take the order unrolled
        model = scan_layout.unrolled(model)
        variables = jax.eval_shape(model.init, jax.random.key(0), x)

    def trace(v, x):
        names.extend(capture_features(model, v, x, level=level))
        return 0
    jax.eval_shape(trace, variables, x)
    return names


def _reorder(values: dict, order: list[str]) -> dict:
    return {k: values[k] for k in order}


def _forward_order_cache(model, level: str) -> Callable[[dict, jax.Array], list[str]]:
    """``names(variables, x)``: :func:`forward_order`, traced once per input shape."""
    orders: dict[tuple, list[str]] = {}

    def names(variables, x):
        key = tuple(jnp.shape(x))
        if key not in orders:
            orders[key] = forward_order(model, variables, x, level=level)
        return orders[key]
    return names


def make_stats_fn(model, *, level: str = "blocks") -> Callable[[dict, jax.Array], dict[str, dict[str, float]]]:
    """Jitted ``(variables, x) -> {block: {stat: float}}`` (host floats) in forward order."""
    jitted = jax.jit(functools.partial(block_stats, model, level=level))
    names = _forward_order_cache(model, level)

    def stats_fn(variables, x):
        return _reorder(stats_table(jitted(variables, x)), names(variables, x))
    return stats_fn


def make_diagnostics_fn(model, *, level: str = "blocks", max_images: int = 4,
                        stats: tuple[str, ...] = DEFAULT_LOG_STATS) -> Callable[[dict, jax.Array], dict]:
    """The function a training loop calls every K steps.

    ``diag(variables, lq) -> {"<block>/<stat>": float32 scalar (device array)}`` in forward block
    order; the computation is one jitted forward pass. ``variables`` as for ``model.apply`` (e.g.
    ``state.variables("raw")``), ``lq`` a training input batch of which the first ``max_images``
    are used. Inference mode (no dropout / drop-path, BatchNorm running statistics). Nothing is
    transferred to the host until the values are read (``DiagnosticsLog.write`` does).
    """
    unknown = set(stats) - set(STATS)
    if unknown:
        raise ValueError(f"Unknown stats {sorted(unknown)}; valid: {', '.join(STATS)}")

    @functools.partial(jax.jit, compiler_options=xla_options.tuned())
    def compute(variables, lq):
        per_block = block_stats(model, variables, lq[:max_images], level=level)
        return {f"{name}/{s}": v[s] for name, v in per_block.items() for s in stats}

    names = _forward_order_cache(model, level)

    def diag(variables, lq):
        # The order from the shape alone: ``lq`` may be a batch sharded over several processes.
        first = jax.ShapeDtypeStruct((min(max_images, lq.shape[0]), *lq.shape[1:]), lq.dtype)
        order = [f"{n}/{s}" for n in names(variables, first) for s in stats]
        return _reorder(compute(variables, lq), order)
    return diag


def to_host(scalars: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(scalars).items()}


class DiagnosticsLog:
    """Appends ``{"step": int, "<block>/<stat>": float, ...}`` lines to ``<workdir>/diagnostics.jsonl``.

    On resume from ``resume_step``, lines written after it (by a killed run) are dropped first.
    Non-finite values are written as the strings "nan" / "inf" / "-inf" (valid JSON).
    """

    FILENAME = "diagnostics.jsonl"

    def __init__(self, workdir: epath.Path, *, resume_step: int = 0, enabled: bool = True):
        self.path = workdir / self.FILENAME
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
                self.path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        for k, v in to_host(scalars).items():
            row[k] = v if math.isfinite(v) else str(v)
        paths.append_text(self.path, json.dumps(row) + "\n")


def missing_reason(workdir: paths.PathLike) -> str | None:
    """Why a training run's work directory holds no diagnostics (None when it does), from its
    ``config.json`` (``train.diagnostics_every``) and ``summary.json`` (the step it ended at)."""
    workdir = paths.as_path(workdir)
    log = workdir / DiagnosticsLog.FILENAME
    if log.exists() and log.read_text().strip():
        return None

    def saved(name: str) -> dict:
        try:
            return json.loads((workdir / name).read_text())
        except (OSError, ValueError):
            return {}
    every = saved("config.json").get("train", {}).get("diagnostics_every")
    final = saved("summary.json").get("final_step")
    if every is not None and every <= 0:
        return f"train.diagnostics_every={every} (off) in {workdir}"
    if every is not None and final is not None and final < every:
        return (f"the run in {workdir} ended at step {final}, before its first diagnostics step "
                f"(train.diagnostics_every={every})")
    return f"no {log} (not a training run's work directory, or one started before diagnostics were logged)"


def read_diagnostics(path: paths.PathLike) -> dict:
    """A ``diagnostics.jsonl`` as ``{"steps": (T,), "blocks": [names], "<stat>": (T, n_blocks)}``."""
    rows = [json.loads(ln) for ln in paths.as_path(path).read_text().splitlines() if ln.strip()]
    if not rows:
        raise ValueError(f"{path} holds no diagnostics")
    return history_from_rows(rows)


def history_from_rows(rows: list[dict]) -> dict:
    """Rows ``{"step", "<block>/<stat>": value}`` -> arrays per stat, blocks in first-seen order."""
    blocks, stats = [], []
    for key in rows[0]:
        if key == "step":
            continue
        block, _, stat = key.rpartition("/")
        if block not in blocks:
            blocks.append(block)
        if stat not in stats:
            stats.append(stat)
    out: dict[str, Any] = {"steps": np.array([r["step"] for r in rows]), "blocks": blocks}
    for s in stats:
        out[s] = np.array([[float(r.get(f"{b}/{s}", "nan")) for b in blocks] for r in rows])
    return out


def stats_table(per_block: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Host floats of :func:`block_stats` output."""
    return {b: {k: float(v) for k, v in jax.device_get(s).items()} for b, s in per_block.items()}

"""A grid: the same recipe and seed for every norm, one train.py-style work directory per norm.

``OUT/grid.json`` records the recipe (config spec and overrides); re-running the command with the
same recipe continues the grid, with another recipe it refuses (two recipes never mix in one
table). Norms may be added to a grid later: they join under the same recipe.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

from iln_jax.errors import ConfigError
from iln_jax.layers.norm_registry import resolve_norm
from iln_jax.train.configs import load_config

# The nine norms of the i-LN paper's Table 1 (``biasfree_layernorm`` is Restormer's LN variant).
PAPER_NORMS = ("layernorm", "batchnorm", "instancenorm", "rmsnorm", "layerscale", "rezero", "none", "ln_star",
               "iln")
PLAN_FILE = "grid.json"
RESULT_FILE = "grid_result.json"


@dataclasses.dataclass(frozen=True)
class GridRun:
    norm: str
    workdir: Path

    @property
    def result_path(self) -> Path:
        return self.workdir / RESULT_FILE

    @property
    def done(self) -> bool:
        return self.result_path.is_file()


def parse_norms(text: str) -> list[str]:
    """``"all,my_norms:MyNorm"`` -> the paper's nine and the user's, in order, each checked."""
    norms: list[str] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        for norm in PAPER_NORMS if item == "all" else (item,):
            if norm not in norms:
                resolve_norm(norm, key="--norms")
                norms.append(norm)
    if not norms:
        raise ConfigError(f"--norms {text!r} names no norm")
    return norms


def slug(norm: str) -> str:
    """A directory name for a norm (import paths contain ':' and '.')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", norm)


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


def run_config(config_spec: str, norm: str, overrides: dict):
    """The run's config: the spec with ``norm=`` (so norm-dependent defaults such as i-LN's input
    std follow the norm), then the overrides; keys that do not exist are errors naming them."""
    path, _, arg = config_spec.partition(":")
    try:
        config = load_config(f"{path}:{arg + ',' if arg else ''}norm={norm}", lock=False)
    except ValueError as e:
        raise ConfigError(f"--config {config_spec!r}: {e}") from None
    config.lock()
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
    return config


def plan_runs(out: Path, norms: list[str]) -> list[GridRun]:
    return [GridRun(norm, out / "runs" / slug(norm)) for norm in norms]


def record_plan(out: Path, recipe: dict, norms: list[str]) -> None:
    """Write ``grid.json``, or check that the recipe is the one the grid was started with."""
    path = out / PLAN_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["recipe"] != recipe:
            changed = sorted(k for k in set(saved["recipe"]) | set(recipe) if saved["recipe"].get(k) != recipe.get(k))
            raise ConfigError(f"{out} holds a grid with another recipe (changed: {', '.join(changed)}); "
                              "use a new --out, or the same --config/--set/--data-root/--datasets")
        norms = list(dict.fromkeys([*saved["norms"], *norms]))
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"recipe": recipe, "norms": norms}, indent=2) + "\n")
    tmp.replace(path)


def planned_norms(out: Path) -> list[str]:
    return json.loads((out / PLAN_FILE).read_text())["norms"]

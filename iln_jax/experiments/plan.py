"""A grid: one recipe, several norms, each trained with one or more seeds, one train.py-style
work directory per run (``OUT/runs/<norm>/seed<k>/``).

``OUT/grid.json`` records the recipe (config spec and overrides, evaluation data) and the planned
runs (norm, seed, directory); re-running the command with the same recipe continues the grid,
with another recipe it refuses (two recipes never mix in one table). Norms and seeds may be added
to a grid later: they join under the same recipe. The seed is not part of the recipe: it is what
the runs of one norm vary (config key ``seed``).
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from iln_jax.errors import ConfigError
from iln_jax.layers.norm_registry import resolve_norm
from iln_jax.train.configs import apply_overrides, load_config

# The nine norms of the i-LN paper's Table 1 (``biasfree_layernorm`` is Restormer's LN variant).
PAPER_NORMS = ("layernorm", "batchnorm", "instancenorm", "rmsnorm", "layerscale", "rezero", "none", "ln_star",
               "iln")
PLAN_FILE = "grid.json"
RESULT_FILE = "grid_result.json"


@dataclasses.dataclass(frozen=True)
class GridRun:
    norm: str
    seed: int
    workdir: Path

    @property
    def label(self) -> str:
        return f"{self.norm} seed {self.seed}"

    @property
    def result_path(self) -> Path:
        return self.workdir / RESULT_FILE

    @property
    def done(self) -> bool:
        return self.result_path.is_file()


def parse_norms(text: str, key: str = "--norms") -> list[str]:
    """``"all,my_norms:MyNorm"`` -> the paper's nine and the user's, in order, each checked."""
    norms: list[str] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        for norm in PAPER_NORMS if item == "all" else (item,):
            if norm not in norms:
                resolve_norm(norm, key=key)
                norms.append(norm)
    if not norms:
        raise ConfigError(f"{key} {text!r} names no norm")
    return norms


def _seed_list(text: str, item: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {item!r}: expected non-negative integers, e.g. --seeds 1,2,3 or "
                          "--seeds layernorm,iln=1,2,3")
    return seeds


def parse_seeds(items: list[str], norms: list[str], default: int) -> dict[str, list[int]]:
    """``--seeds`` items -> ``{norm: sorted seeds}`` for every norm of ``norms``.

    An item ``1,2,3`` gives every norm those seeds; an item ``NORMS=SEEDS`` (``layernorm,iln=1,2,3``,
    ``all=4``) gives the named norms exactly those seeds instead (several such items for one norm
    add up). Norms no item names get the plain items' seeds, or ``default`` (the config's seed)
    without plain items.
    """
    plain: list[int] = []
    named: dict[str, list[int]] = {}
    for item in items:
        names, sep, values = item.rpartition("=")
        seeds = _seed_list(values, item)
        if not sep:
            plain += seeds
            continue
        for norm in parse_norms(names, key=f"--seeds {item!r}"):
            if norm not in norms:
                raise ConfigError(f"--seeds {item!r}: {norm} is not one of --norms ({', '.join(norms)})")
            named.setdefault(norm, []).extend(seeds)
    base = plain or [default]
    return {norm: sorted(set(named.get(norm, base))) for norm in norms}


def slug(norm: str) -> str:
    """A directory name for a norm (import paths contain ':' and '.')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", norm)


def run_config(config_spec: str, norm: str, overrides: dict, seed: int | None = None):
    """The run's config: the spec with ``norm=`` (so norm-dependent defaults such as i-LN's input
    std follow the norm), then the overrides and the seed; keys that do not exist are errors
    naming them."""
    path, _, arg = config_spec.partition(":")
    try:
        config = load_config(f"{path}:{arg + ',' if arg else ''}norm={norm}", lock=False)
    except ValueError as e:
        raise ConfigError(f"--config {config_spec!r}: {e}") from None
    config.lock()
    apply_overrides(config, overrides)
    if seed is not None:
        config.seed = seed
    return config


def run_order(seeds: dict[str, list[int]]) -> list[tuple[str, int]]:
    """(norm, seed) pairs, seed-major: every norm's first seed before any second seed, so that a
    grid stopped half-way holds a complete single-seed table."""
    all_seeds = sorted({s for v in seeds.values() for s in v})
    return [(norm, s) for s in all_seeds for norm, v in seeds.items() if s in v]


def run_dir(norm: str, seed: int) -> str:
    return f"runs/{slug(norm)}/seed{seed}"


def _planned(saved: dict, default_seed: int) -> list[dict]:
    """The runs of a saved plan. A grid written before seeds existed lists ``norms``, each run in
    ``runs/<norm>/`` with the config's seed."""
    if "runs" in saved:
        return saved["runs"]
    return [{"norm": n, "seed": default_seed, "dir": f"runs/{slug(n)}"} for n in saved["norms"]]


def record_plan(out: Path, recipe: dict, seeds: dict[str, list[int]], default_seed: int) -> list[GridRun]:
    """Write ``grid.json`` (or check that the recipe is the one the grid was started with and add
    the new runs to it); returns every planned run."""
    path = out / PLAN_FILE
    runs: list[dict] = []
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["recipe"] != recipe:
            changed = sorted(k for k in set(saved["recipe"]) | set(recipe) if saved["recipe"].get(k) != recipe.get(k))
            raise ConfigError(f"{out} holds a grid with another recipe (changed: {', '.join(changed)}); "
                              "use a new --out, or the same --config/--set/--data-root/--datasets/--precisions")
        runs = _planned(saved, default_seed)
    known = {(r["norm"], r["seed"]) for r in runs}
    runs += [{"norm": n, "seed": s, "dir": run_dir(n, s)} for n, s in run_order(seeds) if (n, s) not in known]
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"recipe": recipe, "runs": runs}, indent=2) + "\n")
    tmp.replace(path)
    return planned_runs(out, default_seed)


def planned_runs(out: Path, default_seed: int) -> list[GridRun]:
    saved = json.loads((out / PLAN_FILE).read_text())
    return [GridRun(r["norm"], int(r["seed"]), out / r["dir"]) for r in _planned(saved, default_seed)]


def find_run(out: Path, norm: str, seed: int, default_seed: int) -> GridRun:
    for run in planned_runs(out, default_seed):
        if (run.norm, run.seed) == (norm, seed):
            return run
    raise ConfigError(f"{out / PLAN_FILE} plans no run {norm} seed {seed}")

"""``python -m iln_jax.experiments.grid``: the i-LN paper's normalization grid as one resumable command.

    python -m iln_jax.experiments.grid --config configs/hat.py:variant=hat-mini \\
        --norms all,my_norms:MyNorm --out runs/grid --data-root /data/testsets --datasets Set5,Set14
    python -m iln_jax.experiments.grid --config configs/swinir.py:tiny=1 --norms layernorm,iln \\
        --set train.num_steps=200 --set train.diagnostics_every=50 --out /tmp/grid   # embedded photos
    python -m iln_jax.experiments.grid --config configs/default.py --norms all --seeds 1 \\
        --seeds layernorm,ln_star,iln,rezero,none=1,2,3 --out runs/grid_seeds    # 9 norms, 5 of them x3

Every norm is trained with the same recipe (the config, ``norm=<norm>`` and the ``--set``
overrides) once per seed (config key ``seed``) in ``OUT/runs/<norm>/seed<k>/``, a normal train.py
work directory (per-block diagnostics every ``train.diagnostics_every`` steps), then evaluated on
the benchmark folders (``--data-root`` / ``--datasets``; the embedded photos otherwise; BatchNorm
also in train mode) and measured in low precision.

Seeds (``--seeds``, repeatable): ``1,2,3`` gives every norm of ``--norms`` these seeds;
``NORMS=SEEDS`` (``layernorm,iln=1,2,3``) gives the named norms exactly those seeds instead.
Without ``--seeds`` every norm runs once with the config's seed. Runs go seed by seed (every norm's
first seed before any second one).

Outputs in OUT: ``table1.md/json`` (mean ± std over seeds per dataset, i-LN minus every other norm
in units of the difference's standard error, non-convergence with the test that fired),
``table3.md/json``, ``dynamics.png``, ``depth_over_training.png``, ``depth_profile.png`` (when the
runs recorded diagnostics; ``figures.json`` lists what was written and why anything was not),
``grid.json`` (the recipe and the planned runs).

Re-running the same command continues a killed grid: finished runs (``grid_result.json``) are not
redone, an interrupted run resumes exactly from its checkpoints; more norms or seeds may be added
later under the same recipe. Runs go one after another, or with ``--device-groups K`` side by side
in K processes on disjoint device sets (CPU: the forced host devices are split; GPU:
``CUDA_VISIBLE_DEVICES``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import jax

from iln_jax.errors import ConfigError, DataNotFoundError, run_cli
from iln_jax.train.configs import parse_overrides
from iln_jax.experiments import figures, plan, tables
from iln_jax.experiments.run import execute
from iln_jax.inference.precision import PRECISIONS
from iln_jax.paths import dump_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config file[:args], as train.py's --config")
    p.add_argument("--norms", default="all", help="comma-separated: 'all' (the paper's nine), names, "
                                                   "import paths 'module:attr'")
    p.add_argument("--out", required=True, help="grid directory (re-run the command to continue it)")
    p.add_argument("--seeds", action="append", default=[], metavar="SEEDS|NORMS=SEEDS",
                   help="'1,2,3': every norm with these seeds; 'layernorm,iln=1,2,3': these norms with exactly "
                        "these seeds (repeatable; default: the config's seed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run, e.g. train.num_steps=300 (repeatable)")
    p.add_argument("--data-root", help="folder holding the benchmark folders (default: the embedded photos)")
    p.add_argument("--datasets", default="", help="comma-separated benchmark names under --data-root "
                                                  "(default: the task's standard ones); 'embedded': the "
                                                  "embedded photos. Table 3 uses the first")
    p.add_argument("--precisions", default="fp16,bf16,int8,int4",
                   help="Table 3's precisions (iln_jax.inference.precision.PRECISIONS); '' skips it")
    p.add_argument("--device-groups", type=int, default=1,
                   help="run this many runs side by side, each on its own share of the devices")
    p.add_argument("--only", help=argparse.SUPPRESS)  # one run (norm), in a --device-groups worker process
    p.add_argument("--only-seed", type=int, help=argparse.SUPPRESS)  # ... and its seed
    return p.parse_args(argv)


def _recipe(args) -> dict:
    return {"config": args.config, "set": sorted(args.set), "data_root": args.data_root or "",
            "datasets": args.datasets, "precisions": args.precisions}


def _run_one(args, run: plan.GridRun) -> dict:
    config = plan.run_config(args.config, run.norm, parse_overrides(args.set), seed=run.seed)
    datasets = [d for d in args.datasets.split(",") if d]
    print(f"[grid] {run.label}: {run.workdir}", flush=True)
    return execute(run, config, data_root=args.data_root, datasets=datasets, precisions=_precisions(args))


def _check_datasets(args, config) -> None:
    """The benchmark folders exist before the training they are evaluated after."""
    from iln_jax.evaluation import benchmarks
    if not args.data_root:
        return
    if not Path(args.data_root).is_dir():
        raise DataNotFoundError(f"--data-root {args.data_root} is not a folder")
    names = [d for d in args.datasets.split(",") if d]
    if not names:
        names = list(benchmarks.default_datasets(config.data.task))
    for name in names:
        if name != "embedded":
            benchmarks.resolve_dataset(args.data_root, name)


def _precisions(args) -> tuple[str, ...]:
    chosen = tuple(p for p in args.precisions.split(",") if p)
    bad = [p for p in chosen if p not in PRECISIONS or p == "fp32"]
    if bad:
        raise ConfigError(f"--precisions {args.precisions!r}: unknown {bad}; valid: fp16, bf16, int8, int4")
    return chosen


def device_groups(count: int, groups: int) -> list[list[int]]:
    """Disjoint, equal device-id sets (the remainder is left idle)."""
    if groups < 1 or groups > count:
        raise ConfigError(f"--device-groups {groups}: must be between 1 and the {count} device(s)")
    size = count // groups
    return [list(range(g * size, (g + 1) * size)) for g in range(groups)]


def worker_env(platform: str, ids: list[int]) -> dict:
    env = dict(os.environ)
    if platform == "cpu":
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={len(ids)}"])
    elif platform in ("gpu", "cuda", "rocm"):
        visible = env.get("CUDA_VISIBLE_DEVICES")
        physical = visible.split(",") if visible else [str(i) for i in range(max(ids) + 1)]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(physical[i] for i in ids)
    else:
        raise ConfigError(f"--device-groups > 1 is not supported on {platform} (run one grid per host instead)")
    return env


def _run_side_by_side(args, pending: list[plan.GridRun], argv: list[str]) -> None:
    groups = device_groups(jax.device_count(), args.device_groups)
    platform = jax.devices()[0].platform
    queue, lock, failures = list(pending), threading.Lock(), []

    def slot(ids):
        while True:
            with lock:
                if not queue:
                    return
                run = queue.pop(0)
            cmd = [sys.executable, "-m", "iln_jax.experiments.grid", *argv, "--only", run.norm,
                   "--only-seed", str(run.seed), "--device-groups", "1"]
            done = subprocess.run(cmd, env=worker_env(platform, ids), stdout=sys.stdout, stderr=sys.stderr)
            if done.returncode:
                failures.append(f"{run.label} (exit {done.returncode})")

    threads = [threading.Thread(target=slot, args=(ids,)) for ids in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise ConfigError(f"grid runs failed: {', '.join(failures)}; re-run the command to continue")


def _without_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def write_reports(args, out: Path, runs: list[plan.GridRun], title: str) -> dict:
    results = [json.loads(r.result_path.read_text()) for r in runs if r.done]
    md1, t1 = tables.table1(results)
    md3, t3 = tables.table3(results, _precisions(args) or None)
    (out / "table1.md").write_text(f"# Table 1: {title}\n\n" + md1)
    (out / "table3.md").write_text(f"# Table 3: {title}\n\n" + md3)
    dump_json(t1, out / "table1.json")
    dump_json(t3, out / "table3.json")
    figs = figures.write_figures(results, out, title)
    dump_json(figs, out / "figures.json")
    written = ["table1.md", "table1.json", "table3.md", "table3.json", "figures.json", *figs["written"]]
    return {"table1": t1, "table3": t3, "figures": figs, "written": [f for f in written if (out / f).is_file()],
            "finished_runs": [(r["norm"], r.get("seed")) for r in results]}


def diagnostics_note(config) -> str | None:
    """Said before training when no run will record diagnostics (so no figure can be drawn)."""
    every, steps = int(config.train.diagnostics_every), int(config.train.num_steps)
    if every > 0:
        return None  # recorded every ``every`` steps and at the last one
    return (f"[grid] note: train.diagnostics_every={every} (off): the runs record no diagnostics, so no figures; "
            f"add e.g. --set train.diagnostics_every={max(1, steps // 10)} for them")


def report_lines(out: Path, report: dict, unfinished: list[str]) -> list[str]:
    """What the grid wrote (each file named exists) and what it did not, and why."""
    lines = [f"[grid] wrote {out}/: {', '.join(report['written'])}"]
    for name, why in report["figures"]["not_written"].items():
        lines.append(f"[grid] not written: {name}: {why}")
    if report["figures"]["written"]:
        lines += [f"[grid] not in the figures: {run}: {why}"
                  for run, why in report["figures"]["runs_without_diagnostics"].items()]
    if unfinished:
        lines.append(f"[grid] unfinished: {', '.join(unfinished)} (re-run the same command to continue)")
    return lines


def progress_line(out: Path, runs: list[plan.GridRun], wanted: set, pending: list[plan.GridRun]) -> str:
    """How many planned runs are finished, how many this command runs, and how many planned runs
    (by an earlier command's ``--seeds``) it leaves for later."""
    done = sum(r.done for r in runs)
    line = f"[grid] {out}: {done} of {len(runs)} planned runs finished; running {len(pending)}"
    later = [r for r in runs if (r.norm, r.seed) not in wanted and not r.done]
    if later:
        line += (f"; {len(later)} other planned run(s) not in this command's --seeds "
                 f"({', '.join(r.label for r in later[:4])}{' ...' if len(later) > 4 else ''})")
    return line


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out)
    norms = plan.parse_norms(args.norms)
    _precisions(args)
    overrides = parse_overrides(args.set)
    if "seed" in overrides:
        raise ConfigError(f"--set seed={overrides['seed']}: the seed is what a grid's runs vary, not part of the "
                          f"recipe; use --seeds {overrides['seed']}")
    config = plan.run_config(args.config, norms[0], overrides)
    default_seed = int(config.seed)  # every run's seed without --seeds
    seeds = plan.parse_seeds(args.seeds, norms, default_seed)
    _check_datasets(args, config)
    if args.only:
        run = plan.find_run(out, args.only, default_seed if args.only_seed is None else args.only_seed, default_seed)
        return _run_one(args, run) if not run.done else {}
    runs = plan.record_plan(out, _recipe(args), seeds, default_seed)
    if (note := diagnostics_note(config)) is not None:
        print(note, flush=True)
    wanted = set(plan.run_order(seeds))
    pending = [r for r in runs if (r.norm, r.seed) in wanted and not r.done]
    print(progress_line(out, runs, wanted, pending), flush=True)
    title = f"{args.config} {' '.join(args.set)}".strip()
    if args.device_groups > 1 and len(pending) > 1:
        _run_side_by_side(args, pending, _without_option(argv, "--device-groups"))
    else:
        for run in pending:
            result = _run_one(args, run)
            write_reports(args, out, runs, title)  # the tables so far, should the grid be stopped
            if result.get("status") == "preempted":  # SIGTERM: the run saved its state; stop the grid too
                print(f"[grid] preempted during {run.label}; re-run the same command to continue", flush=True)
                break
    report = write_reports(args, out, runs, title)
    print("\n".join(report_lines(out, report, [r.label for r in runs if not r.done])), flush=True)
    print((out / "table1.md").read_text() + "\n" + (out / "table3.md").read_text(), flush=True)
    return report


if __name__ == "__main__":
    from iln_jax.data import BadImageError
    run_cli("grid", main, hints={BadImageError: "--set data.on_bad_image=skip leaves unusable images out"})

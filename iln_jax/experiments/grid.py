"""``python -m iln_jax.experiments.grid``: the i-LN paper's normalization grid as one resumable command.

    python -m iln_jax.experiments.grid --config configs/hat.py:variant=hat-mini \\
        --norms all,my_norms:MyNorm --out runs/grid --data-root /data/testsets --datasets Set5,Set14
    python -m iln_jax.experiments.grid --config configs/swinir.py:tiny=1 --norms layernorm,iln \\
        --set train.num_steps=200 --out /tmp/grid                        # embedded photos

Every norm is trained with the same recipe and seed (the config, ``norm=<norm>`` and the ``--set``
overrides) in ``OUT/runs/<norm>/``, a normal train.py work directory (per-block diagnostics every
``train.diagnostics_every`` steps), then evaluated on the benchmark folders (``--data-root`` /
``--datasets``; the embedded photos otherwise; BatchNorm also in train mode) and measured in low
precision. Outputs in OUT: ``table1.md/json``, ``table3.md/json``, ``dynamics.png``,
``depth_over_training.png``, ``depth_profile.png``, ``figures.json``, ``grid.json`` (the recipe).

Re-running the same command continues a killed grid: finished runs (``grid_result.json``) are not
redone, an interrupted run resumes exactly from its checkpoints. Runs go one after another, or
with ``--device-groups K`` side by side in K processes on disjoint device sets (CPU: the forced host
devices are split; GPU: ``CUDA_VISIBLE_DEVICES``).
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

from iln_jax.errors import ConfigError, run_main
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
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run, e.g. train.num_steps=300 (repeatable)")
    p.add_argument("--data-root", help="folder holding the benchmark folders (default: the embedded photos)")
    p.add_argument("--datasets", default="", help="comma-separated benchmark names under --data-root "
                                                  "(default: the task's standard ones); 'embedded': the "
                                                  "embedded photos. Table 3 uses the first")
    p.add_argument("--precisions", default="fp16,bf16,int8,int4",
                   help="Table 3's precisions (iln_jax.inference.precision.PRECISIONS); '' skips it")
    p.add_argument("--device-groups", type=int, default=1,
                   help="run this many norms side by side, each on its own share of the devices")
    p.add_argument("--only", help=argparse.SUPPRESS)  # one run, in a --device-groups worker process
    return p.parse_args(argv)


def _recipe(args) -> dict:
    return {"config": args.config, "set": sorted(args.set), "data_root": args.data_root or "",
            "datasets": args.datasets, "precisions": args.precisions}


def _run_one(args, run: plan.GridRun) -> dict:
    config = plan.run_config(args.config, run.norm, plan.parse_overrides(args.set))
    datasets = [d for d in args.datasets.split(",") if d]
    print(f"[grid] {run.norm}: {run.workdir}", flush=True)
    return execute(run, config, data_root=args.data_root, datasets=datasets, precisions=_precisions(args))


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
            cmd = [sys.executable, "-m", "iln_jax.experiments.grid", *argv, "--only", run.norm, "--device-groups", "1"]
            done = subprocess.run(cmd, env=worker_env(platform, ids), stdout=sys.stdout, stderr=sys.stderr)
            if done.returncode:
                failures.append(f"{run.norm} (exit {done.returncode})")

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
    dump_json(figures.write_figures(results, out, title), out / "figures.json")
    return {"table1": t1, "table3": t3, "finished": [r["norm"] for r in results]}


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out)
    norms = plan.parse_norms(args.norms)
    plan.parse_overrides(args.set)
    _precisions(args)
    if args.only:
        run = plan.plan_runs(out, [args.only])[0]
        return _run_one(args, run) if not run.done else {}
    plan.record_plan(out, _recipe(args), norms)
    runs = plan.plan_runs(out, plan.planned_norms(out))
    pending = [r for r in runs if r.norm in norms and not r.done]
    print(f"[grid] {out}: {len(runs) - len(pending)} of {len(runs)} runs finished; running {len(pending)}", flush=True)
    title = f"{args.config} {' '.join(args.set)}".strip()
    if args.device_groups > 1 and len(pending) > 1:
        _run_side_by_side(args, pending, _without_option(argv, "--device-groups"))
    else:
        for run in pending:
            result = _run_one(args, run)
            write_reports(args, out, runs, title)  # the tables so far, should the grid be stopped
            if result.get("status") == "preempted":  # SIGTERM: the run saved its state; stop the grid too
                print(f"[grid] preempted during {run.norm}; re-run the same command to continue", flush=True)
                break
    report = write_reports(args, out, runs, title)
    unfinished = [r.norm for r in runs if not r.done]
    print(f"[grid] wrote {out}/table1.md, table3.md, dynamics.png, depth_over_training.png, depth_profile.png"
          + (f"; unfinished: {', '.join(unfinished)} (re-run to continue)" if unfinished else ""), flush=True)
    print((out / "table1.md").read_text() + "\n" + (out / "table3.md").read_text(), flush=True)
    return report


if __name__ == "__main__":
    run_main("grid", main)

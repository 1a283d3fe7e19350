"""Training-loop throughput (steps/s) of two checkouts on the same configs: before/after a loop change.

    # issue 15 (prefetch to devices, metrics fetched every log_every steps, host-side preemption
    # agreement): main vs this branch, the default config and a mid-size model, 8 host devices
    python bench/loop_throughput.py --before /work/main --after . --devices 8 --json loop.json

Each (config, checkout) pair runs ``train.py`` of that checkout in a fresh process on a fresh work
directory (``--steps`` steps, no validation, no diagnostics, one checkpoint at the end, its own
compilation cache off) and reads ``steps_per_sec`` from its ``summary.json``: training time only,
compilation, checkpoints and validation excluded by the loop itself. Run it on a quiet machine;
``--repeats`` takes the best of several runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "default": ("configs/default.py", []),
    "hat_mini_iln": ("configs/hat_mini_iln.py:scale=2", ["--config.data.batch_size=8"]),
}


def run(repo: Path, spec: str, extra: list[str], *, steps: int, devices: int, log_every: int) -> float:
    with tempfile.TemporaryDirectory(prefix="loop_bench_") as workdir:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        args = [sys.executable, "train.py", "--config", spec, "--workdir", workdir,
                f"--config.train.num_steps={steps}", "--config.eval.every=-1",
                "--config.train.diagnostics_every=0", f"--config.train.checkpoint_every={steps}",
                f"--config.train.log_every={log_every}", "--config.train.progress_bar=False", *extra]
        if (repo / "iln_jax" / "train" / "compile_cache.py").exists():
            args.append("--config.train.compilation_cache_dir=")  # compile time is excluded anyway
        proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{repo}: {spec} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return float(json.loads((Path(workdir) / "summary.json").read_text())["steps_per_sec"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="checkout measured first (e.g. /work/main)")
    p.add_argument("--after", default=".", help="checkout measured second (default: this one)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {', '.join(CONFIGS)}")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--devices", type=int, default=8, help="host (CPU) devices; ignored on GPU/TPU")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    rows = []
    for name in a.configs.split(","):
        spec, extra = CONFIGS[name]
        row = {"config": name}
        for label, repo in (("before", a.before), ("after", a.after)):
            row[label] = max(run(Path(repo).resolve(), spec, extra, steps=a.steps, devices=a.devices,
                                 log_every=a.log_every) for _ in range(a.repeats))
        row["speedup"] = row["after"] / row["before"]
        rows.append(row)
        print(f"{name:<14} before {row['before']:.3f} steps/s   after {row['after']:.3f} steps/s   "
              f"x{row['speedup']:.3f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"devices": a.devices, "steps": a.steps, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Train-step time, page faults and kernel time with and without ``iln_jax.host_memory`` (before/after).

    python bench/host_memory.py --config configs/swinir.py:task=sr,scale=4 --batch 4 --patch 48
    python bench/host_memory.py --config configs/default.py --policies system,reuse --json host_memory.json

The allocator setting must be made before JAX starts, so each policy runs in its own process: the
processes take turns (``--rounds``), each compiling the same train step once and timing ``--steps``
steps, with the minor page faults and user/kernel CPU seconds of every step from ``getrusage``.
The table gives, per policy, the median over all timed steps and the fastest step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from iln_jax import host_memory  # noqa: E402

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from iln_jax import host_memory
reused = host_memory.configure({policy!r})
from train_step import _config, time_jax
c = _config({config!r}, {norm!r}, {batch!r}, {patch!r}, None, {kwargs!r})
r = time_jax(c, 0, {warmup})
run = r["_run"]
steps = []
for _ in range({steps}):
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = run(1)
    after = resource.getrusage(resource.RUSAGE_SELF)
    steps.append(dict(ms=seconds * 1e3, user_s=after.ru_utime - before.ru_utime,
                      sys_s=after.ru_stime - before.ru_stime, minor_faults=after.ru_minflt - before.ru_minflt))
print("RESULT " + json.dumps(dict(reused=reused, compile_s=r["compile_s"], temp_gib=r.get("temp_gib"),
                                  steps=steps, max_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/swinir.py:task=sr,scale=4", help="config file[:args], as train.py")
    p.add_argument("--norm", default="iln")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--model-kwargs", default="{}", help="JSON of model arguments to override")
    p.add_argument("--policies", default="system,reuse", help=f"comma-separated, from {', '.join(host_memory.POLICIES)}")
    p.add_argument("--steps", type=int, default=3, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="processes per policy, taking turns")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def run_child(a, policy: str) -> dict:
    code = CHILD.format(root=str(ROOT), bench=str(ROOT / "bench"), policy=policy, config=a.config, norm=a.norm,
                        batch=a.batch, patch=a.patch, kwargs=json.loads(a.model_kwargs), warmup=a.warmup,
                        steps=a.steps)
    env = {k: v for k, v in os.environ.items() if k != host_memory.ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"bench/host_memory.py: the {policy} process failed (exit {out.returncode}): "
                         f"{(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarize(policy: str, runs: list) -> dict:
    steps = [s for r in runs for s in r["steps"]]
    med = lambda key: float(np.median([s[key] for s in steps]))  # noqa: E731
    return dict(policy=policy, reused=runs[0]["reused"], ms_per_step=med("ms"), min_ms_per_step=min(s["ms"] for s in steps),
                user_s=med("user_s"), sys_s=med("sys_s"), minor_faults=med("minor_faults"),
                compile_s=float(np.median([r["compile_s"] for r in runs])), temp_gib=runs[0]["temp_gib"],
                max_rss_gib=max(r["max_rss_gib"] for r in runs), steps=steps)


def format_table(r: dict) -> str:
    lines = [f"{r['config']} ({r['norm']}) train step, batch {r['batch']} x {r['patch']}^2, {r['cpu_count']} CPUs, "
             f"jax {r['jax']}: {r['rounds']} processes per policy x {r['steps']} steps",
             f"{'policy':<10}{'reused':>8}{'ms/step':>10}{'min ms':>9}{'user s':>8}{'sys s':>7}{'faults':>11}"
             f"{'temp GiB':>10}{'max RSS GiB':>13}"]
    for x in r["results"]:
        lines.append(f"{x['policy']:<10}{str(x['reused']):>8}{x['ms_per_step']:>10.0f}{x['min_ms_per_step']:>9.0f}"
                     f"{x['user_s']:>8.2f}{x['sys_s']:>7.2f}{x['minor_faults']:>11,.0f}{x['temp_gib']:>10.2f}"
                     f"{x['max_rss_gib']:>13.2f}")
    lines.append(f"medians over every timed step; 1-min load average {r['load_average_start'][0]:.2f} before, "
                 f"{r['load_average_end'][0]:.2f} after")
    return "\n".join(lines)


def main(argv=None):
    from train_step import publish
    a = parse_args(argv)
    policies = [p.strip() for p in a.policies.split(",") if p.strip()]
    load_start = os.getloadavg()
    runs = {p: [] for p in policies}
    for _ in range(a.rounds):
        for policy in policies:
            runs[policy].append(run_child(a, policy))
            print(f"[host_memory] {policy}: {[round(s['ms']) for s in runs[policy][-1]['steps']]} ms", flush=True)
    import jax
    report = dict(config=a.config, norm=a.norm, batch=a.batch, patch=a.patch, steps=a.steps, rounds=a.rounds,
                  model_kwargs=json.loads(a.model_kwargs), jax=jax.__version__, cpu_count=os.cpu_count(),
                  load_average_start=load_start, load_average_end=os.getloadavg(),
                  results=[summarize(p, runs[p]) for p in policies])
    return publish(report, format_table(report), a.json)


if __name__ == "__main__":
    main()

"""XLA's planned memory and the step time of the full train step, per remat policy.

    python bench/memory.py                                   # SwinIR-M, HAT, HAT-L x4, 4 x 64^2 per device
    python bench/memory.py --models hat-l --policies none,block,dots --json memory.json
    python bench/memory.py --no-time                         # memory only (compile, no step)

For every model and ``remat_policy`` the train step that ``train.py`` runs (forward, L1, backward,
Adam, EMA) is compiled for a per-device batch of ``--batch`` LR patches of ``--patch``^2, and
``compiled.memory_analysis()`` gives what XLA plans to allocate: ``temp`` (activations and
workspace), ``arguments`` (state + batch) and ``outputs`` (the new state; aliased to the donated
arguments). Then the step is timed. ``--scan`` chooses ``scan_layers`` (default: scanned, the
layout remat is made for; ``both`` adds the unrolled model).

On CPU the planned numbers are exact for that backend; GPU/TPU plan their own (run it there).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the iln_jax of this checkout, which is not installed

from iln_jax import host_memory  # noqa: E402
from train_step import _config, device_info, interleave_rounds, publish, time_jax  # noqa: E402

MODELS = {
    "swinir-m": "configs/swinir.py:task=sr,scale=4",
    "hat": "configs/hat.py:variant=hat,task=sr,scale=4",
    "hat-l": "configs/hat.py:variant=hat-l,task=sr,scale=4",
}


def parse_args(argv=None):
    from iln_jax.models import REMAT_POLICIES
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--policies", default=",".join(REMAT_POLICIES), help="comma-separated remat policies")
    p.add_argument("--scan", default="on", choices=("on", "off", "both"), help="scan_layers")
    p.add_argument("--norm", default="iln")
    p.add_argument("--batch", type=int, default=4, help="per-device batch")
    p.add_argument("--patch", type=int, default=64, help="LR patch size")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="timing rounds, interleaved over one model's policies")
    p.add_argument("--no-time", action="store_true", help="only compile and report memory")
    p.add_argument("--host-malloc", default="auto", choices=host_memory.POLICIES,
                   help="iln_jax.host_memory policy for this process (default auto)")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def measure(spec: str, norm: str, batch: int, patch: int, scan: bool, policy: str, steps: int, warmup: int,
            timed: bool) -> dict:
    import jax
    c = _config(spec, norm, batch * jax.device_count(), patch, "mesh",
                {"scan_layers": scan, "remat_policy": policy})
    r = time_jax(c, steps if timed else 0, warmup if timed else 0)
    if not timed:
        r["ms_per_step"] = r["steps_per_s"] = r["patches_per_s"] = None
    return {k: v for k, v in r.items() if not k.startswith("_") or k == "_run"}


def main(argv=None):
    a = parse_args(argv)
    host_malloc_reused = host_memory.configure(a.host_malloc)
    load_start = os.getloadavg()
    scans = {"on": (True,), "off": (False,), "both": (False, True)}[a.scan]
    rows = []
    for name in a.models.split(","):
        model_rows = []
        for scan in scans:
            for policy in a.policies.split(","):
                r = measure(MODELS[name], a.norm, a.batch, a.patch, scan, policy, a.steps, a.warmup, not a.no_time)
                r.update(model=name, scan_layers=scan, remat_policy=policy)
                model_rows.append(r)
                print(f"[memory] {name} scan={scan} {policy}: temp {r['temp_gib']:.2f} GiB, "
                      f"compile {r['compile_s']:.1f} s" + (f", {r['ms_per_step']:.0f} ms/step" if r["ms_per_step"]
                                                          else ""), flush=True)
        interleave_rounds(model_rows, a.rounds if not a.no_time else 1, a.steps)
        rows += model_rows
    report = dict(batch_per_device=a.batch, patch=a.patch, norm=a.norm, rounds=a.rounds, steps=a.steps,
                  load_average_start=load_start, load_average_end=os.getloadavg(), **device_info(),
                  host_malloc=a.host_malloc, host_malloc_reused=host_malloc_reused, results=rows)
    return publish(report, format_table(report), a.json)


def format_table(r: dict) -> str:
    lines = [f"train step, {r['batch_per_device']} x {r['patch']}^2 LR patches per device, norm {r['norm']}, "
             f"{r['device_count']} x {r['device']} ({r['backend']}, jax {r['jax']})",
             f"{'model':<10}{'scan':<6}{'remat':<25}{'params':>12}{'compile s':>11}{'temp GiB':>10}{'args GiB':>10}"
             f"{'out GiB':>9}{'ms/step':>10}{'vs none':>9}"]
    base = {(x["model"], x["scan_layers"]): x["ms_per_step"] for x in r["results"] if x["remat_policy"] == "none"}
    for x in r["results"]:
        ms = x["ms_per_step"]
        ref = base.get((x["model"], x["scan_layers"]))
        extra = f"{100 * (ms / ref - 1):+.0f}%" if ms and ref else "-"
        lines.append(f"{x['model']:<10}{str(x['scan_layers']):<6}{x['remat_policy']:<25}{x['params']:>12,}"
                     f"{x['compile_s']:>11.1f}{x['temp_gib']:>10.2f}{x['argument_gib']:>10.2f}{x['output_gib']:>9.2f}"
                     f"{(f'{ms:.0f}' if ms else '-'):>10}{extra:>9}")
    lines.append(f"ms/step: median of {r['rounds']} rounds of {r['steps']} steps, interleaved over one model's "
                 f"configurations; 1-min load average {r['load_average_start'][0]:.2f} before, "
                 f"{r['load_average_end'][0]:.2f} after")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

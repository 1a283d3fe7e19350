"""How far the full-size train step is from this machine's limit, next to its ratio to PyTorch.

    python bench/roofline.py --models swinir-m --torch-ref ~/src/SwinIR --json roofline_swinir.json
    python bench/roofline.py --models hat --torch-ref ~/src/HAT --sequential --json roofline_hat.json
    python bench/roofline.py --tiny                       # CPU-test sizes: checks the path, numbers mean nothing

For each model (SwinIR-M x4 at 4 x 48², HAT x4 at 4 x 64²; LayerNorm, the norm both frameworks have):
model FLOPs per step (``bench/flops.py``: the matmuls and convolutions of the step's program, forward
and backward), cross-checked with XLA's cost analysis of the compiled step and with PyTorch's
``FlopCounterMode`` on the official model (``--torch-ref``); the step time of iln_jax and of the
official PyTorch step (``bench/train_step.py``'s ``time_jax`` / ``time_torch``, same weights, same
batch); the achieved GFLOP/s of each; and the machine's measured peak, a large float32 matrix product
in each framework (``bench/gemm.py``). The step's fraction of that peak is the distance to the limit:
a step at 0.6 of the GEMM peak can gain at most 1/0.6 from faster kernels, whatever PyTorch does.
``--sequential`` times JAX's rounds, frees them, then PyTorch's (HAT's two steps do not fit in 24 GiB
side by side); otherwise the rounds are interleaved.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import train_step as bench_step  # noqa: E402  (puts the repository root on sys.path)
from iln_jax import host_memory  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="swinir-m,hat", help="comma-separated: swinir-m, hat")
    p.add_argument("--norm", default="layernorm")
    p.add_argument("--torch-ref", default=None,
                   help="checkout(s) of the official PyTorch repositories, comma-separated")
    p.add_argument("--steps", type=int, default=1, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--sequential", action="store_true", help="JAX's rounds first, then PyTorch's (memory)")
    p.add_argument("--gemm-n", type=int, default=4096, help="side of the square matrices of the peak measurement")
    p.add_argument("--gemm-reps", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="CPU-test model sizes (configs' tiny=1): checks the path")
    p.add_argument("--host-malloc", default="auto", choices=host_memory.POLICIES)
    p.add_argument("--json", default=None, help="write the report here")
    return p.parse_args(argv)


def measure_peaks(n: int, reps: int, with_torch: bool) -> dict:
    import gemm
    peaks = {"jax": gemm.jax_gemm(n, "float32", reps=reps)}
    if with_torch:
        peaks["torch"] = gemm.torch_gemm(n, "float32", reps=reps)
    return peaks


def model_rows(a, name: str, refs: list, peaks: dict) -> list[dict]:
    import flops
    from accelerator_sections import DRY_MODELS, MODELS
    spec = (DRY_MODELS if a.tiny else MODELS)[name]
    import jax
    batch = spec.per_device_batch * jax.device_count()  # one CPU is one device; the tests simulate several
    c = bench_step._config(spec.config, a.norm, batch, spec.patch, None, dict(spec.kwargs))
    model_flops = flops.step_model_flops(c)
    r = bench_step.time_jax(c, a.steps, a.warmup)
    results = [r]
    if a.sequential:
        bench_step.finish_rounds_now(results, a.rounds, a.steps)
    t = bench_step.time_torch(c, refs, r, a.steps, a.warmup, count_flops=True) if refs else None
    if t is not None:
        results.append(t)
    for x in results:
        for k in ("_variables", "_forward", "_model", "_inputs", "_host_batch"):
            x.pop(k, None)
    if a.sequential:
        bench_step.finish_rounds_now(results, a.rounds, a.steps)
    else:
        bench_step.interleave_rounds(results, a.rounds, a.steps)
    machine_peak = max(p["gflops_per_s"] for p in peaks.values())
    rows = []
    for x, framework in ((r, "jax"), (t, "torch")):
        if x is None:
            continue
        gflops = model_flops / 1e9 / (x["ms_per_step"] / 1e3)
        own = peaks.get(framework, {}).get("gflops_per_s")
        rows.append(dict(model=name, config=spec.config, batch=c.data.batch_size, patch=c.data.patch_size,
                         norm=a.norm, framework=framework, impl=x["impl"], ms_per_step=x["ms_per_step"],
                         round_ms=x.get("round_ms"), model_gflop_per_step=model_flops / 1e9,
                         xla_gflop_per_step=(x.get("xla_flops") or 0) / 1e9 or None,
                         torch_counted_gflop_per_step=x["torch_flops"] / 1e9 if "torch_flops" in x else None,
                         achieved_gflops_per_s=gflops, own_gemm_peak_gflops_per_s=own,
                         fraction_of_own_gemm_peak=gflops / own if own else None,
                         fraction_of_machine_peak=gflops / machine_peak,
                         forward_max_abs_diff_vs_jax=x.get("forward_max_abs_diff_vs_jax")))
    if t is not None:
        rows[0]["speed_vs_torch"] = t["ms_per_step"] / r["ms_per_step"]
        if not a.sequential and "round_ms" in t:
            rows[0]["speed_vs_torch_per_round"] = bench_step.per_round_ratio(t, r)
    del r, t, results
    gc.collect()
    host_memory.release_freed_memory()
    return rows


def format_table(report: dict) -> str:
    peaks = report["gemm_peaks"]
    head = ", ".join(f"{k} {v['gflops_per_s']:.1f} GFLOP/s" for k, v in peaks.items())
    lines = [f"Roofline on {report['device']} ({report['cpu_count']} CPUs): measured float32 GEMM peak "
             f"({report['gemm_n']}^2, best of {report['gemm_reps']}): {head}",
             f"{'model':<10}{'impl':<28}{'ms/step':>10}{'model GFLOP':>13}{'XLA GFLOP':>11}{'torch cnt':>11}"
             f"{'GFLOP/s':>9}{'of own peak':>13}{'of machine':>12}{'vs PyTorch':>12}"]
    for x in report["rows"]:
        def fmt(key, spec, x=x):
            return format(x[key], spec) if x.get(key) is not None else "-"
        lines.append(f"{x['model']:<10}{x['impl'][:27]:<28}{x['ms_per_step']:>10.1f}{x['model_gflop_per_step']:>13.2f}"
                     f"{fmt('xla_gflop_per_step', '.2f'):>11}{fmt('torch_counted_gflop_per_step', '.2f'):>11}"
                     f"{x['achieved_gflops_per_s']:>9.1f}{fmt('fraction_of_own_gemm_peak', '.0%'):>13}"
                     f"{x['fraction_of_machine_peak']:>12.0%}{fmt('speed_vs_torch', '.2f'):>12}")
    lines.append("model GFLOP: matmuls and convolutions, forward and backward (bench/flops.py); XLA GFLOP: XLA's "
                 "cost analysis (all ops); torch cnt: FlopCounterMode on the official model; vs PyTorch: its "
                 "step time / iln_jax's (median rounds)")
    return "\n".join(lines)


def main(argv=None) -> dict:
    a = parse_args(argv)
    host_memory.configure(a.host_malloc)
    load_start = os.getloadavg()
    refs = [Path(x).expanduser() for x in a.torch_ref.split(",")] if a.torch_ref else []
    if a.tiny:
        a.gemm_n, a.gemm_reps = min(a.gemm_n, 256), min(a.gemm_reps, 2)
    peaks = measure_peaks(a.gemm_n, a.gemm_reps, with_torch=bool(refs))
    rows = []
    for name in [m for m in a.models.split(",") if m]:
        rows += model_rows(a, name, refs, peaks)
    info = bench_step.device_info()
    report = dict(info, gemm_n=a.gemm_n, gemm_reps=a.gemm_reps, gemm_peaks=peaks, steps=a.steps, rounds=a.rounds,
                  warmup=a.warmup, sequential=a.sequential, tiny=a.tiny, load_average_start=load_start,
                  load_average_end=os.getloadavg(), rows=rows)
    return bench_step.publish(report, format_table(report), a.json)


if __name__ == "__main__":
    main()

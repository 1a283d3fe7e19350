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
``--sequential`` times JAX's rounds, then PyTorch's in a process of its own (given JAX's weights,
batch and forward output through files): HAT's PyTorch step alone takes ~20 GB, more than is left
next to a JAX process on a 23 GiB machine. Otherwise the rounds are interleaved.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

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
    p.add_argument("--batch", type=int, default=None,
                   help="images per device instead of the model's (SwinIR-M 4, HAT 4): to fit a smaller machine")
    p.add_argument("--model-kwargs", default="{}",
                   help="JSON of model fields for iln_jax's step, as in bench/train_step.py, e.g. "
                        "'{\"remat_policy\": \"dots\"}' (the model FLOPs stay those of the model without remat)")
    p.add_argument("--host-malloc", default="auto", choices=host_memory.POLICIES)
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--torch-child", default=None, help=argparse.SUPPRESS)  # internal: --sequential's PyTorch side
    return p.parse_args(argv)


def model_config(a, name: str):
    """-> (model spec, config of the timed step, the ``--model-kwargs`` fields) for model ``name``."""
    from accelerator_sections import DRY_MODELS, MODELS
    import jax
    spec = (DRY_MODELS if a.tiny else MODELS)[name]
    options = json.loads(a.model_kwargs)
    batch = (a.batch or spec.per_device_batch) * jax.device_count()  # one CPU is one device; the tests simulate several
    return spec, bench_step._config(spec.config, a.norm, batch, spec.patch, None, {**dict(spec.kwargs), **options}), options


def measure_peaks(n: int, reps: int, with_torch: bool) -> dict:
    import gemm
    peaks = {"jax": gemm.jax_gemm(n, "float32", reps=reps)}
    if with_torch:
        peaks["torch"] = gemm.torch_gemm(n, "float32", reps=reps)
    return peaks


def model_rows(a, name: str, refs: list, peaks: dict) -> list[dict]:
    import flops
    spec, c, options = model_config(a, name)
    model_flops = flops.step_model_flops(c)
    r = bench_step.time_jax(c, a.steps, a.warmup)
    results = [r]
    if a.sequential:
        bench_step.finish_rounds_now(results, a.rounds, a.steps)
        t = torch_in_own_process(a, name, r, refs) if refs else None
    else:
        t = bench_step.time_torch(c, refs, r, a.steps, a.warmup, count_flops=True) if refs else None
    if t is not None:
        results.append(t)
    for x in results:
        for k in ("_variables", "_forward", "_model", "_inputs", "_host_batch"):
            x.pop(k, None)
    if not a.sequential:
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
                         model_options=options if framework == "jax" else None,
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


def torch_in_own_process(a, name: str, jax_result: dict, refs: list) -> dict | None:
    """``--sequential``'s PyTorch side: JAX's weights, batch and forward output go to files, a child
    process (this script with ``--torch-child``) times the official step on them, the parent's JAX
    memory out of its way. Returns time_torch's result (None: no checkout has the class)."""
    from flax import serialization
    with tempfile.TemporaryDirectory(prefix="roofline_torch_") as folder:
        folder = Path(folder)
        batch = jax_result["_host_batch"]
        (folder / "variables.msgpack").write_bytes(serialization.msgpack_serialize(jax_result["_variables"]))
        np.savez(folder / "inputs.npz", lq=batch["lq"], gt=batch["gt"], forward=jax_result["_forward"](batch["lq"]))
        for k in ("_variables", "_forward", "_inputs"):
            jax_result.pop(k, None)
        gc.collect()
        host_memory.release_freed_memory()
        argv = [sys.executable, str(Path(__file__).resolve()), "--torch-child", str(folder), "--models", name,
                "--norm", a.norm, "--torch-ref", a.torch_ref, "--steps", str(a.steps), "--rounds", str(a.rounds),
                "--warmup", str(a.warmup), "--host-malloc", a.host_malloc, *(["--tiny"] if a.tiny else []),
                *([f"--batch={a.batch}"] if a.batch else []),
                "--model-kwargs", a.model_kwargs]
        done = subprocess.run(argv)
        result = folder / "torch.json"
        if done.returncode != 0 or not result.exists():
            print(f"[bench] {name}: the PyTorch process ended with exit code {done.returncode} "
                  f"({'killed: out of memory?' if done.returncode in (-9, 137) else 'see its output above'}); "
                  f"no PyTorch row", flush=True)
            return None
        return json.loads(result.read_text()) or None


def torch_child(a) -> None:
    """The process :func:`torch_in_own_process` starts: the official step on the parent's weights."""
    from flax import serialization
    folder = Path(a.torch_child)
    _, c, _ = model_config(a, a.models)
    inputs = np.load(folder / "inputs.npz")
    forward = inputs["forward"]
    jax_result = {"_variables": serialization.msgpack_restore((folder / "variables.msgpack").read_bytes()),
                  "_host_batch": {"lq": inputs["lq"], "gt": inputs["gt"]}, "_forward": lambda x: forward}
    refs = [Path(x).expanduser() for x in a.torch_ref.split(",")]
    t = bench_step.time_torch(c, refs, jax_result, a.steps, a.warmup, count_flops=True)
    if t is not None:
        bench_step.finish_rounds_now([t], a.rounds, a.steps)
        t = {k: v for k, v in t.items() if not k.startswith("_")}
    (folder / "torch.json").write_text(json.dumps(t))


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
    if a.torch_child:
        return torch_child(a)
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

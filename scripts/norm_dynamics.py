"""Reproduce the i-LN paper's training-dynamics comparison at a small scale: LN vs i-LN (or the grid).

A quick, self-contained loop for LN-vs-i-LN side by side, with extra checks (tiling, buckets, bias
alignment). The paper's whole grid -- any norms including your own, real train.py runs,
resumable, benchmark folders, Tables 1/3 and the figures -- is ``python -m iln_jax.experiments.grid``.

Trains one small SwinIR per norm on the embedded photos (SR x2, L1, Adam), logging the per-block
diagnostics (``iln_jax.analysis``) every ``--every`` steps, then on the held-out photos
(astronaut, coffee, chelsea; 240x240) measures PSNR/SSIM (Y, crop 2), the low-precision table
(fp16 / bf16 W+F, int8 / int4 W; PSNR vs fp32, non-finite pixels), tiled-vs-whole and
bucketed-vs-exact agreement, and the offline diagnostics (bias alignment, position bias).

    python scripts/norm_dynamics.py --steps 3000 --out runs/norm_dynamics                # LN vs i-LN
    python scripts/norm_dynamics.py --norms layernorm,iln,ln_star,rmsnorm,layerscale --steps 3000
    python scripts/norm_dynamics.py --steps 20 --every 5 --embed-dim 8 --depths 2 --out /tmp/nd  # smoke

Outputs in ``--out``: ``dynamics.png`` (E[x^2] and channel entropy per block over steps, one column
per norm), ``depth_profile.png``, ``bias_alignment.png``, ``summary.json`` / ``summary.md``, and per
norm ``<norm>/diagnostics.jsonl``, ``<norm>/analysis/`` and ``<norm>/params.msgpack``.
The model defaults (E 24, 3 groups x 2 blocks, window 8, 4 heads, 24 px LR patches, batch 8) are what a
2-core CPU trains for a few thousand steps in tens of minutes; the paper's runs are 300k-500k
steps of E 96-180 models, so expect the trends, not the magnitudes.

What the defaults showed at 3000 steps (LN vs i-LN): docs/results/norm_dynamics_default_3000.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from iln_jax import data as data_lib  # noqa: E402
from iln_jax import diagnostics  # noqa: E402
from iln_jax.analysis import plots  # noqa: E402
from iln_jax.analysis.report import analyze_model  # noqa: E402
from iln_jax.evaluation import benchmarks, tasks  # noqa: E402
from iln_jax.evaluation.evaluate import evaluate_dataset  # noqa: E402
from iln_jax.evaluation.precision import format_report, precision_report  # noqa: E402
from iln_jax.inference import Restorer  # noqa: E402
from iln_jax.paths import dump_json  # noqa: E402
from iln_jax.train import DataParallel, build_model, make_step  # noqa: E402
from iln_jax.train.configs import load_config  # noqa: E402
from iln_jax.train.state import param_count  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--norms", default="layernorm,iln", help="comma-separated norms (iln_jax.layers.norms.NORMS)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=100, help="diagnostics every K steps")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--embed-dim", type=int, default=24)
    p.add_argument("--depths", default="2,2,2", help="blocks per residual group")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--patch", type=int, default=24, help="LR patch side")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tile", type=int, default=48, help="tile side for the tiled-vs-whole check")
    p.add_argument("--out", default="runs/norm_dynamics")
    return p.parse_args(argv)


def make_config(norm: str, args):
    c = load_config(str(ROOT / "configs/swinir.py") + f":task=sr,scale={args.scale},norm={norm},tiny=1", lock=False)
    depths = tuple(int(d) for d in args.depths.split(","))
    k = c.model.kwargs
    k.embed_dim, k.depths, k.num_heads = args.embed_dim, depths, (args.heads,) * len(depths)
    k.window_size, k.img_size = args.window, args.patch
    k.upsampler = "pixelshuffledirect"
    c.data.patch_size, c.data.batch_size = args.patch, args.batch
    c.optim.lr, c.optim.schedule = args.lr, "constant"
    c.optim.ema_decay = 0.0
    c.seed = args.seed
    return c


def train(norm: str, args, out: Path) -> dict:
    c = make_config(norm, args)
    model = build_model(c)
    one_device = DataParallel("mesh", devices=jax.devices()[:1])
    init_state, step_fn = make_step(c, model, one_device)
    state = init_state()
    diag_fn = diagnostics.make_diagnostics_fn(model, max_images=4)
    log = diagnostics.DiagnosticsLog(out)
    data = iter(data_lib.make_train_dataset(c.data, seed=c.seed))
    losses, t0 = [], time.perf_counter()
    diag_times, step_times = [], []  # steady state (first calls, which compile, excluded)
    for step in range(args.steps + 1):
        batch = next(data)
        if step % args.every == 0 or step == args.steps:
            td = time.perf_counter()
            log.write(step, diag_fn(state.variables("raw"), batch["lq"]))
            diag_times.append(time.perf_counter() - td)
        if step == args.steps:
            break
        ts = time.perf_counter()
        state, metrics = step_fn(state, one_device.shard_batch(batch))
        if step % args.every == 0:
            losses.append((step, float(metrics["loss"])))
            print(f"[{norm}] step {step} loss {losses[-1][1]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        else:
            jax.block_until_ready(metrics["loss"])
        step_times.append(time.perf_counter() - ts)
    train_seconds = time.perf_counter() - t0
    step_s = float(np.median(step_times[1:])) if len(step_times) > 1 else float("nan")
    diag_s = float(np.median(diag_times[1:])) if len(diag_times) > 1 else float("nan")
    from flax import serialization
    variables = jax.device_get(state.variables("raw"))
    (out / "params.msgpack").write_bytes(serialization.to_bytes(variables))
    return {"model": model, "variables": variables, "losses": losses, "train_seconds": train_seconds,
            "step_seconds": step_s, "diagnostics_call_seconds": diag_s,
            "diagnostics_overhead": diag_s / (args.every * step_s),
            "params": param_count(state.params)}


def measure(norm: str, run: dict, eval_set: list[dict], conv, args, out: Path) -> dict:
    model, variables = run["model"], run["variables"]
    exact = evaluate_dataset(Restorer(model, variables, bucket=0), eval_set, conv, dataset="heldout",
                             out_dir=out, progress=False)
    bucketed = evaluate_dataset(Restorer(model, variables, bucket=64), eval_set, conv, dataset="heldout_bucket64",
                                out_dir=out, save_images=False, progress=False)
    whole = [Restorer(model, variables, bucket=0).restore(im["lq"]) for im in eval_set]
    tiled = [Restorer(model, variables, tile=args.tile, tile_overlap=args.tile // 4).restore(im["lq"])
             for im in eval_set]
    tiled_eval = evaluate_dataset(Restorer(model, variables, tile=args.tile, tile_overlap=args.tile // 4), eval_set,
                                  conv, dataset="heldout_tiled", out_dir=out, save_images=False, progress=False)
    prec = precision_report(model, variables, eval_set, conv)
    analysis = analyze_model(model, variables, [im["lq"] for im in eval_set], out / "analysis", label=norm,
                             crop=96, history_path=out / "diagnostics.jsonl")
    return {"psnr": exact["psnr"], "ssim": exact["ssim"], "bicubic_psnr": exact["baseline"]["psnr"],
            "psnr_bucket64": bucketed["psnr"], "psnr_tiled": tiled_eval["psnr"],
            "tiled_vs_whole_max_abs": float(max(np.abs(a - b).max() for a, b in zip(tiled, whole))),
            "tiled_vs_whole_mean_abs": float(np.mean([np.abs(a - b).mean() for a, b in zip(tiled, whole)])),
            "precision": prec, "analysis": analysis}


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    norms = [n for n in args.norms.split(",") if n]
    conv = tasks.convention("sr", args.scale)
    eval_set = benchmarks.load(benchmarks.embedded_config("sr", scale=args.scale))
    summary, histories, profiles, alignments = {"args": vars(args)}, {}, {}, {}
    for norm in norms:
        run = train(norm, args, out / norm)
        m = measure(norm, run, eval_set, conv, args, out / norm)
        histories[norm] = diagnostics.read_diagnostics(out / norm / "diagnostics.jsonl")
        profiles[norm] = m["analysis"]["blocks"]
        if "per_channel" in m["analysis"].get("bias_alignment", {}):
            alignments[norm] = m["analysis"]["bias_alignment"]
        h = histories[norm]
        summary[norm] = {
            "params": run["params"], "train_seconds": run["train_seconds"],
            "step_seconds": run["step_seconds"], "diagnostics_call_seconds": run["diagnostics_call_seconds"],
            "diagnostics_overhead": run["diagnostics_overhead"],
            "final_loss": run["losses"][-1][1] if run["losses"] else None,
            **{k: v for k, v in m.items() if k != "analysis"},
            "final_sq_mean_per_block": h["sq_mean"][-1].tolist(),
            "final_entropy_norm_per_block": h["entropy_norm"][-1].tolist(),
            "initial_sq_mean_per_block": h["sq_mean"][0].tolist(),
            "max_abs_feature": m["analysis"].get("max_abs_feature"),
            "fp16_headroom": m["analysis"].get("fp16_headroom"),
            "position_bias_mean_locality": m["analysis"].get("position_bias_mean_locality"),
            "bias_alignment": {k: v for k, v in m["analysis"].get("bias_alignment", {}).items() if k != "per_channel"},
        }
        dump_json(summary, out / "summary.json")
    plots.plot_dynamics(histories, out / "dynamics.png", stats=("sq_mean", "entropy_norm", "max_abs"),
                        title=f"SwinIR E{args.embed_dim} depths {args.depths}, SR x{args.scale}, {args.steps} steps")
    plots.plot_depth_profiles(profiles, out / "depth_profile.png", stats=("sq_mean", "entropy_norm", "max_abs"))
    if alignments:
        plots.plot_bias_alignment(alignments, out / "bias_alignment.png")
    (out / "summary.md").write_text(summary_markdown(summary, norms))
    print((out / "summary.md").read_text())
    return summary


def summary_markdown(summary: dict, norms: list[str]) -> str:
    lines = ["| norm | PSNR Y (dB) | SSIM Y | bicubic | bucket64 | tiled | tiled-whole max | final E[x²] (last block) "
             "| min entropy/logC | max abs feature | fp16 headroom | diag overhead |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in norms:
        s = summary[n]
        lines.append(f"| {n} | {s['psnr']:.3f} | {s['ssim']:.4f} | {s['bicubic_psnr']:.3f} | {s['psnr_bucket64']:.3f} | "
                     f"{s['psnr_tiled']:.3f} | {s['tiled_vs_whole_max_abs']:.2e} | {s['final_sq_mean_per_block'][-1]:.3g} | "
                     f"{min(s['final_entropy_norm_per_block']):.3f} | {s['max_abs_feature']:.3g} | "
                     f"{s['fp16_headroom']:.3g} | {100 * s['diagnostics_overhead']:.1f}% |")
    lines += ["", format_report({n: summary[n]["precision"] for n in norms})]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Inference latency and peak memory per image size: whole image vs tiled, fp32 vs bf16.

    python bench/inference.py                                   # SwinIR-light x2, 256/512/1024, CPU
    python bench/inference.py --variant swinir-classical --kwargs '{"upscale": 2}' --sizes 256,512 \\
        --tile 256 --overlap 32 --repeats 3 --out bench/results/inference_classical.json

Every configuration runs in its own subprocess, so "peak RSS" is that configuration's own high-water
mark (it includes the Python/JAX runtime, ~0.3-0.5 GB). "planned" is what XLA's buffer assignment
reserves for one call (arguments + outputs + temporaries) -- the device-side peak, exact and
independent of other load; on GPU/TPU the allocator's ``peak_bytes_in_use`` is reported too.
Latency is the median of ``--repeats`` calls after one warm-up call, from host input to host
output (padding, transfers, and for tiles the blending included); compile time is separate.
Configurations whose plan exceeds free memory are not run (the restorer's own check) and are
listed with the memory they would need. Weights are random (latency does not depend on them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def run_one(args) -> dict:
    """One configuration, in this process (the parent calls it through a subprocess)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from iln_jax import models
    from iln_jax.inference import Restorer

    kwargs = models.variant_kwargs(args.variant, **json.loads(args.kwargs))
    module = models.create(models.variant_arch(args.variant), norm=args.norm, **kwargs)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 16, 16, kwargs.get("in_chans", 3))))
    tile = args.tile if args.mode == "tiled" else 0
    restorer = Restorer(module, variables, precision=args.precision, bucket=0, tile=tile, tile_overlap=args.overlap,
                        tile_batch=args.tile_batch)
    size = args.size
    img = np.random.default_rng(0).uniform(size=(size, size, kwargs.get("in_chans", 3))).astype(np.float32)
    shape = restorer.padded_shape(args.tile_batch if tile else 1, min(tile or size, size), min(tile or size, size),
                                  img.shape[-1])
    t0 = time.perf_counter()
    fits = restorer.fits(shape)
    compile_s = time.perf_counter() - t0
    out = {"variant": args.variant, "norm": args.norm, "size": size, "mode": args.mode, "precision": args.precision,
           "tile": tile or None, "overlap": args.overlap if tile else None, "call_shape": list(shape),
           "planned_bytes": restorer.planned.get(tuple(shape)), "compile_s": compile_s,
           "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend()}
    if not fits:
        out.update(skipped=True, reason="plan exceeds free memory")
        return out
    restorer.restore(img)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        restorer.restore(img)
        times.append(time.perf_counter() - t0)
    out.update(skipped=False, latency_s=float(np.median(times)), latency_all_s=times,
               megapixels_per_s=size * size / 1e6 / float(np.median(times)),
               peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
    return out


def _gib(b) -> str:
    return "-" if b is None else f"{b / 2**30:.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| size | mode | precision | latency (s) | MP/s | planned (GiB) | peak RSS (GiB) | compile (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mode = f"tiled {r['tile']}/{r['overlap']}" if r["mode"] == "tiled" else "whole"
        if r.get("skipped"):
            lines.append(f"| {r['size']}² | {mode} | {r['precision']} | not run: {r.get('reason', r.get('error', ''))} | | "
                         f"{_gib(r.get('planned_bytes'))} | | {r.get('compile_s', 0):.1f} |")
            continue
        lines.append(f"| {r['size']}² | {mode} | {r['precision']} | {r['latency_s']:.2f} | {r['megapixels_per_s']:.3f} | "
                     f"{_gib(r['planned_bytes'])} | {_gib(r['peak_rss_bytes'])} | {r['compile_s']:.1f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="swinir-lightweight")
    p.add_argument("--kwargs", default='{"upscale": 2}', help="JSON overrides of the variant's kwargs")
    p.add_argument("--norm", default="layernorm")
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--modes", default="whole,tiled")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--tile-batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    p.add_argument("--out", default="bench/results/inference.json")
    # internal: run one configuration and print its JSON
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for mode in args.modes.split(","):
            if mode == "tiled" and args.tile >= size:
                continue  # one tile = the whole image
            for precision in args.precisions.split(","):
                cmd = [sys.executable, os.path.abspath(__file__), "--one", "--size", str(size), "--mode", mode,
                       "--precision", precision, "--variant", args.variant, "--kwargs", args.kwargs,
                       "--norm", args.norm, "--tile", str(args.tile), "--overlap", str(args.overlap),
                       "--tile-batch", str(args.tile_batch), "--repeats", str(args.repeats)]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                    row = json.loads(line[7:]) if line else {
                        "size": size, "mode": mode, "precision": precision, "tile": args.tile, "overlap": args.overlap,
                        "skipped": True, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
                except subprocess.TimeoutExpired:
                    row = {"size": size, "mode": mode, "precision": precision, "tile": args.tile,
                           "overlap": args.overlap, "skipped": True, "reason": f"timeout {args.timeout}s"}
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    result = {"variant": args.variant, "kwargs": json.loads(args.kwargs), "norm": args.norm,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_avg_at_end": os.getloadavg()}, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    md = os.path.splitext(args.out)[0] + ".md"
    with open(md, "w") as f:
        f.write(f"# Inference: {args.variant} {args.kwargs} norm={args.norm}\n\n{table(rows)}\n")
    print(table(rows))


if __name__ == "__main__":
    main()

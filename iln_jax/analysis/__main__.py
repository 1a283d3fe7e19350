"""``python -m iln_jax.analysis``: the paper's diagnostics for one checkpoint (see ``report.py``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from iln_jax import cli
from iln_jax.analysis.report import analyze_model
from iln_jax.data import images as image_io
from iln_jax.data.degradations import to_float
from iln_jax.errors import run_cli
from iln_jax.evaluation import benchmarks


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    cli.add_model_args(p)
    p.add_argument("--out", default="analysis", help="output folder")
    p.add_argument("--images", help="folder of input images (default: the embedded held-out photos, "
                                    "degraded for the run's task)")
    p.add_argument("--crop", type=int, default=96, help="centre-crop side of the analysis batch")
    p.add_argument("--level", choices=("blocks", "groups", "all"), default="blocks")
    args = p.parse_args(argv)
    loaded = cli.load_model(args)
    if args.images:
        channels = getattr(loaded.module, "in_chans", 3)
        inputs = [to_float(image_io.read_image(f, f, channels, "y")) for f in image_io.list_images(args.images)]
    else:
        saved = loaded.data_defaults()
        task = saved.get("task", "sr")
        config = benchmarks.embedded_config(task, scale=getattr(loaded.module, "scale", 1),
                                            channels=getattr(loaded.module, "in_chans", 3))
        inputs = [im["lq"] for im in benchmarks.load(config)]
    history = Path(args.workdir) / "diagnostics.jsonl" if args.workdir else None
    result = analyze_model(loaded.module, loaded.variables, inputs, args.out, label=f"{loaded.arch}/{loaded.norm}",
                           level=args.level, crop=args.crop, history_path=history)
    print(f"[analysis] wrote {args.out}/: {', '.join(result['written'])}; max |feature| "
          f"{result.get('max_abs_feature')}")
    for name, why in result["not_written"].items():
        print(f"[analysis] not written: {name}: {why}")
    return result


if __name__ == "__main__":
    run_cli("analysis", main)

"""Export a restorer as serialized StableHLO with symbolic batch, height and width.

    python -m iln_jax.export --pretrained swinir-classical-x2 --out swinir_x2.npz
    python -m iln_jax.export --workdir runs/default --dtype float16 --out mine_fp16.npz    # EMA weights
    python -m iln_jax.export --pth 001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth --variant swinir-classical \\
        --kwargs '{"upscale": 2}' --padding symmetric --out swinir_x2.npz

Then, in any process with jax (no model code): ``iln_jax.export.load("swinir_x2.npz")(image)``.
After writing, the file is loaded back and run on a photo of an odd size; the difference from the
float32 model and the non-finite pixels (float16 overflow) are printed.
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

from iln_jax import cli
from iln_jax.data.embedded import photo
from iln_jax.errors import run_cli
from iln_jax.export.artifact import load
from iln_jax.export.exporter import DTYPES, export_restorer
from iln_jax.inference.precision import nonfinite_pixels
from iln_jax.layers.padding import OFFICIAL_PADDINGS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m iln_jax.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_model_args(p)
    g = p.add_argument_group("export")
    g.add_argument("--out", required=True, help="file to write (.npz)")
    g.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="weights and activations")
    g.add_argument("--padding", choices=OFFICIAL_PADDINGS, help="default: the model's (--pretrained: the "
                                                                       "official test script's)")
    g.add_argument("--height", type=int, help="export one fixed size (with --width) instead of any size")
    g.add_argument("--width", type=int)
    g.add_argument("--platforms", help="comma-separated, e.g. cpu,cuda (default: this machine's backend)")
    g.add_argument("--no-check", action="store_true", help="do not run the written file on a test photo")
    g.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def check_image(channels: int, height: int, width: int) -> np.ndarray:
    """A crop of an embedded photo (240x240) as float32 in [0, 1]."""
    return photo("astronaut", channels)[:height, :width].astype(np.float32) / 255.0


def check(path, module, variables, padding: str) -> dict:
    """Run the written file and the float32 model on a photo (of an odd size that is not a multiple of
    the model's, for any-size files); max |difference| and non-finite pixels."""
    exported = load(path)
    meta = exported.meta
    m = meta["multiple"]
    height, width = (meta["height"], meta["width"]) if meta["height"] is not None else (3 * m + 5, 2 * m + 3)
    image = check_image(meta["channels"], height, width)
    if image.shape[:2] != (height, width):
        return {}
    out = np.asarray(exported(image))
    live = module.clone(padding=padding) if hasattr(module, "padding") else module
    ref = np.asarray(jax.jit(live.apply)(variables, image[None]))[0]
    finite = np.isfinite(out)
    diff = np.abs(np.where(finite, out, 0) - ref)[finite]
    return {"shape": image.shape, "max_abs_diff": float(diff.max()) if diff.size else float("nan"),
            "nonfinite_pixels": nonfinite_pixels(out)}


def main(argv=None) -> str:
    args = parse_args(argv)
    loaded = cli.load_model(args)
    padding = args.padding or getattr(loaded.module, "padding", "none")
    platforms = tuple(args.platforms.split(",")) if args.platforms else None
    exported = export_restorer(loaded.module, loaded.variables, dtype=args.dtype, padding=padding,
                               height=args.height, width=args.width, platforms=platforms,
                               meta={"source": loaded.source, "model": loaded.arch, "norm": loaded.norm})
    exported.save(args.out)
    size = "any size >= {0}x{0}".format(exported.meta["min_size"]) if args.height is None \
        else f"{args.height}x{args.width}"
    print(f"[export] {args.out}: {loaded.source}, {loaded.arch} norm={loaded.norm}, {args.dtype}, x{exported.meta['scale']}, "
          f"{padding} padding to a multiple of {exported.meta['multiple']}, {size}, batch any, "
          f"platforms {','.join(exported.meta['platforms'])}", flush=True)
    if not args.no_check:
        report = check(args.out, loaded.module, loaded.variables, padding)
        if not report:
            print("[export] check skipped: the fixed size is larger than the 240x240 test photo", flush=True)
        else:
            print(f"[export] check on a {report['shape'][0]}x{report['shape'][1]} photo: max |file - float32 model| "
                  f"{report['max_abs_diff']:.2e}, non-finite pixels {report['nonfinite_pixels']}", flush=True)
            if report["nonfinite_pixels"]:
                print(f"[export] warning: {args.dtype} overflows on this model (LayerNorm features can exceed "
                      f"float16's 65504; i-LN keeps them bounded): prefer bfloat16 or float32", flush=True)
    return args.out


if __name__ == "__main__":
    run_cli("export", main)

"""Command-line pieces shared by ``eval.py``, ``python -m iln_jax.analysis``, ``python -m
iln_jax.export`` and the benchmarks: where the model comes from (a training run, an official
checkpoint by name, a .pth) and the inference flags.

It sits above ``evaluation`` and ``pretrained`` (a ``--pretrained`` model is loaded through
``pretrained``, which loads its converted run through ``evaluation``).
"""
from __future__ import annotations

import argparse
import json

from iln_jax import models
from iln_jax.errors import ConfigError
from iln_jax.evaluation.checkpoints import LoadedModel, load_pth, load_run
from iln_jax.inference.precision import PRECISIONS
from iln_jax.inference.runner import DEFAULT_OVERLAP
from iln_jax.inference.tiling import BLENDS
from iln_jax.layers.padding import PADDINGS
from iln_jax.pretrained import load_pretrained


def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model (an Orbax training run, an official checkpoint by name, or a .pth)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="training run directory (holds checkpoints/ and config.json)")
    src.add_argument("--pretrained", metavar="NAME",
                     help="official checkpoint by name (python -m iln_jax.pretrained list): downloaded or found in "
                          "the cache, verified, converted once; sets the model, padding and task")
    src.add_argument("--pth", help="official PyTorch checkpoint (.pth), converted with iln_jax.convert")
    g.add_argument("--cache-dir", help="cache of --pretrained (default: $ILN_JAX_CACHE, else ~/.cache/iln_jax)")
    g.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    g.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="EMA weights (falls back to raw when the run kept none) or raw parameters")
    g.add_argument("--arch", help="converter arch for --pth (swinir, hat, hat_iln, drct, restormer, hint); "
                                  "for --workdir it must match the run's")
    g.add_argument("--variant", help="named constructor arguments (iln_jax.models.variants), e.g. swinir-classical")
    g.add_argument("--norm", help="norm (must match the run's / the checkpoint's)")
    g.add_argument("--kwargs", default="{}", help="JSON of official constructor arguments (override --variant)")
    g.add_argument("--param-key", help="state_dict entry of a .pth (params / params_ema; default: params_ema)")


def model_kwargs(args) -> dict:
    try:
        extra = json.loads(args.kwargs)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--kwargs is not valid JSON: {e}") from None
    if args.variant:
        return models.variant_kwargs(args.variant, **extra)
    return extra


def load_model(args) -> LoadedModel:
    if getattr(args, "pretrained", None):
        given = [flag for flag, value in (("--arch", args.arch), ("--variant", args.variant), ("--norm", args.norm),
                                          ("--param-key", args.param_key), ("--step", args.step),
                                          ("--kwargs", args.kwargs != "{}")) if value]
        if given:
            raise ConfigError(f"--pretrained {args.pretrained} sets the model; drop {', '.join(given)}")
        return load_pretrained(args.pretrained, cache_dir=args.cache_dir,
                               progress=not getattr(args, "no_progress", False))
    kwargs = model_kwargs(args)
    if args.workdir:
        return load_run(args.workdir, step=args.step, weights=args.weights, arch=args.arch, norm=args.norm,
                        model_kwargs=kwargs or None)
    arch = args.arch
    if arch is None and args.variant:
        arch = models.variant_arch(args.variant)
    if arch is None:
        raise ConfigError("--pth needs --arch (or --variant)")
    return load_pth(args.pth, arch, param_key=args.param_key, norm=args.norm, **kwargs)


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("inference")
    g.add_argument("--padding", choices=PADDINGS,
                   help="reflect: to the next window multiple (official forward; default: the model's); "
                        "symmetric: always 1..window px (official test scripts)")
    g.add_argument("--bucket", type=_bucket, default="auto",
                   help="auto (default): the official padding (exact) when a folder needs at most --max-compiles "
                        "input shapes, else the smallest bucket that gets there; 0: always exact, one compilation "
                        "per distinct padded size; b > 0: pad further to a multiple of b (changes border pixels "
                        "and i-LN statistics slightly: -0.006 dB LN / -0.019 dB i-LN measured with b=64)")
    g.add_argument("--max-compiles", type=int, default=8,
                   help="with --bucket auto: the most input shapes a folder may compile")
    g.add_argument("--tile", type=int, default=0, help="tile side in input pixels (0: whole image)")
    g.add_argument("--tile-overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in input pixels")
    g.add_argument("--tile-batch", type=int, default=1, help="tiles per device call")
    g.add_argument("--blend", choices=BLENDS, default="linear", help="how overlapping tile outputs are combined")
    g.add_argument("--auto-tile", action="store_true",
                   help="tile images that would not fit in memory instead of stopping with an error")
    g.add_argument("--self-ensemble", action="store_true", help="x8 geometric self-ensemble")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp16/bf16: weights and features; int8/int4: weight-only fake quantization")


def _bucket(value: str):
    if value == "auto":
        return value
    try:
        bucket = int(value)
    except ValueError:
        bucket = -1
    if bucket < 0:
        raise argparse.ArgumentTypeError(f"--bucket takes 'auto' or an integer >= 0, got {value!r}")
    return bucket


def restorer_kwargs(args) -> dict:
    return dict(padding=args.padding, bucket=0 if args.bucket == "auto" else args.bucket, tile=args.tile, tile_overlap=args.tile_overlap,
                tile_batch=args.tile_batch, blend=args.blend, self_ensemble=args.self_ensemble,
                auto_tile=args.auto_tile)

"""Evaluate a model on benchmark folders with each task's conventions; PNGs + results tables.

    # a training run (EMA weights), SR x2 on SwinIR's testsets layout (Set5/HR + Set5/LR_bicubic/X2)
    python eval.py --workdir runs/swinir_iln_x2 --data-root ~/testsets --datasets Set5,Set14,BSD100 --out results/

    # an official checkpoint by name: downloaded (or found in ~/.cache/iln_jax), verified, converted once;
    # model, padding and task as the official test (python -m iln_jax.pretrained list)
    python eval.py --pretrained swinir-classical-x2 --data-root ~/testsets --datasets Set5

    # an official checkpoint file, exactly as the official test script (symmetric padding)
    python eval.py --pth 001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth --variant swinir-classical \\
        --kwargs '{"upscale": 2}' --task sr --scale 2 --padding symmetric \\
        --data-root ~/testsets --datasets Set5 --out results/

    # shapes: by default (--bucket auto) a folder compiles at most --max-compiles (8) input shapes:
    # the official padding when that suffices, else the smallest bucket that does (border pixels
    # change slightly); --bucket 0 always pads exactly as the official code
    # big images: tiles of 256 with 32 px overlap; or --auto-tile; low precision: --precision bf16
    # the fp16/bf16/int8/int4 table and the paper's diagnostics for the same model:
    python eval.py ... --precision-report --diagnostics

``--data-root`` and every dataset folder are checked before a model is downloaded or anything is
evaluated. Unreadable images, mis-sized pairs and images too small for the scale or to measure stop
with one line naming the file; ``--on-bad-image skip`` leaves them out and lists them. Errors are
one line on stderr (exit status 1); ``ILN_JAX_TRACEBACK=1`` shows the traceback.

Conventions (iln_jax/evaluation/tasks.py): SR PSNR/SSIM on Y with crop = scale; denoising on RGB;
JPEG CAR and deraining on Y; RGB and Y are always both stored. Without --datasets, the embedded
held-out photos are used. Writes ``<out>/<dataset>/{images/*.png,results.json,results.md}`` and
``<out>/summary.{md,json}``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from iln_jax import cli, host_memory, paths
from iln_jax.data import BadImageError
from iln_jax.errors import ConfigError, DataNotFoundError, run_cli
from iln_jax.evaluation import benchmarks, evaluate, tasks


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_model_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--task", choices=tasks.TASKS, help="default: the run's task, else sr")
    g.add_argument("--scale", type=int, help="SR scale (default: the run's / the model's)")
    g.add_argument("--noise-sigma", type=float, help="denoising sigma on 0..255 (default: the run's, else 25)")
    g.add_argument("--jpeg-quality", type=int, help="JPEG quality (default: the run's, else 40)")
    g.add_argument("--data-root", help="folder holding the benchmark folders")
    g.add_argument("--datasets", help="comma-separated benchmark names under --data-root, or folder paths "
                                      "(default: the embedded photos)")
    g.add_argument("--crop-border", type=int, help="override the task's crop border")
    g.add_argument("--on-bad-image", choices=("error", "skip"), default="error",
                   help="an unreadable, mis-sized or too small image: stop with an error naming it (default), "
                        "or skip it and list it")
    cli.add_inference_args(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", default="eval_results", help="output folder")
    g.add_argument("--no-images", action="store_true", help="do not write restored PNGs")
    g.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("devices")
    g.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize() (Cloud TPU pods, Slurm, ...); every process "
                        "runs the same command, process 0 writes the outputs")
    g.add_argument("--one-device", action="store_true",
                   help="restore on one device (default: data parallel over every device of every process)")
    g.add_argument("--precision-report", action="store_true",
                   help="also tabulate fp16/bf16/int8/int4 vs fp32 on each dataset (precision_report.md)")
    g.add_argument("--diagnostics", action="store_true",
                   help="also write the paper's diagnostics for this model (<out>/analysis/)")
    return p.parse_args(argv)


def _task_settings(args, loaded) -> dict:
    saved = loaded.data_defaults()
    task = args.task or saved.get("task", "sr")
    model_scale = getattr(loaded.module, "scale", 1)
    scale = args.scale or (saved.get("scale") if task == "sr" else 1) or model_scale
    if task == "sr" and scale != model_scale:
        raise ConfigError(f"the model upscales x{model_scale} but SR x{scale} was asked for (--scale)")
    channels = getattr(loaded.module, "in_chans", getattr(loaded.module, "inp_channels", 3))
    return dict(task=task, scale=scale if task == "sr" else 1,
                noise_sigma=args.noise_sigma if args.noise_sigma is not None else saved.get("noise_sigma", 25),
                jpeg_quality=args.jpeg_quality if args.jpeg_quality is not None else saved.get("jpeg_quality", 40),
                channels=channels)


BAD_IMAGE_HINT = "--on-bad-image skip leaves unusable images out and lists them"


def check_paths(args) -> list[tuple[str, str]]:
    """Everything the command reads or writes is reachable before anything is loaded or downloaded:
    URLs have their packages, ``--data-root`` exists, every dataset folder is found. Returns the
    ``(dataset name, folder)`` of each requested dataset."""
    for flag in ("workdir", "data_root", "out", "cache_dir"):
        value = getattr(args, flag, None)
        if value:
            paths.require_url_support(value, f"--{flag.replace('_', '-')} {value}")
    if args.data_root and not paths.as_path(args.data_root).is_dir():
        raise DataNotFoundError(f"--data-root {args.data_root} is not a folder")
    names = [s.strip() for s in (args.datasets or "").split(",") if s.strip()]
    for name in names:
        paths.require_url_support(name, f"--datasets {name}")
    return [benchmarks.resolve_dataset(args.data_root, name) for name in names]


def _eval_sets(args, datasets: list[tuple[str, str]], t: dict):
    if not datasets:
        yield "embedded", benchmarks.load(benchmarks.embedded_config(**t))
        return
    for name, folder in datasets:
        config = benchmarks.data_config(folder=folder, on_bad_image=args.on_bad_image, **t)
        yield name, benchmarks.load(config)


def _choose_bucket(name: str, eval_set: list[dict], restorer, args) -> int:
    """The dataset's shape bucket (``--bucket auto``: exact unless that compiles too often); says
    how many shapes will compile."""
    from iln_jax.inference.runner import choose_bucket, count_shapes
    sizes = [im["lq"].shape[:2] for im in eval_set]
    exact = count_shapes(sizes, restorer.multiple, restorer.padding)
    if args.tile:
        return 0 if args.bucket == "auto" else args.bucket
    if args.bucket == "auto":
        bucket = choose_bucket(sizes, restorer.multiple, restorer.padding, args.max_compiles)
    else:
        bucket = args.bucket
    n = count_shapes(sizes, restorer.multiple, restorer.padding, bucket)
    if bucket:
        how = (f"bucket {bucket}: {n} shape(s) to compile instead of {exact} (border pixels change "
               f"slightly; --bucket 0 for the official padding)")
    else:
        how = f"{n} input shape(s) to compile, official padding"
    print(f"[eval] {name}: {len(eval_set)} images, {how}", flush=True)
    return bucket


def _mesh(args):
    """All devices of all processes as one data axis (None: one device)."""
    import jax
    import numpy as np
    from jax.sharding import AxisType, Mesh
    if args.one_device or jax.device_count() == 1:
        return None
    return Mesh(np.asarray(jax.devices()), ("data",), axis_types=(AxisType.Auto,))


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    datasets = check_paths(args)
    host_memory.configure()  # before JAX starts its backends
    import jax
    if args.distributed:
        jax.distributed.initialize()
    writer = jax.process_index() == 0  # every process computes, process 0 writes
    out = paths.as_path(args.out)  # a local path or a URL, from here on one epath.Path
    loaded = cli.load_model(args)
    t = _task_settings(args, loaded)
    conv = tasks.convention(t["task"], t["scale"], crop_border=args.crop_border)
    restorer_kw = cli.restorer_kwargs(args)
    from iln_jax.inference import Restorer
    restorer = Restorer(loaded.module, loaded.variables, precision=args.precision, mesh=_mesh(args), **restorer_kw)
    settings = {"model": loaded.source, "arch": loaded.arch, "norm": loaded.norm, "precision": args.precision,
                "padding": restorer.padding, **{k: v for k, v in restorer_kw.items() if k != "padding"}, **t}
    print(f"[eval] {loaded.source}: {loaded.arch} norm={loaded.norm}, "
          f"{tasks.task_description(**{k: t[k] for k in ('task', 'scale', 'noise_sigma', 'jpeg_quality')})}, "
          f"{conv.label}", flush=True)
    results, precision_reports, first_images = [], {}, None
    for name, eval_set in _eval_sets(args, datasets, t):
        eval_set = evaluate.measurable(eval_set, conv, dataset=name, on_bad_image=args.on_bad_image)
        restorer.bucket = _choose_bucket(name, eval_set, restorer, args)
        result = evaluate.evaluate_dataset(restorer, eval_set, conv, dataset=name,
                                           out_dir=out if writer else None,
                                           save_images=not args.no_images, progress=writer and not args.no_progress,
                                           settings={**settings, "bucket": restorer.bucket})
        results.append(result)
        print(f"[eval] {name}: PSNR {result['psnr']:.3f} dB, SSIM {result['ssim']:.4f} ({conv.label}); "
              f"bicubic/input {result['baseline']['psnr']:.3f} dB; {result['num_images']} images, "
              f"{len(result['compiled_shapes'])} compiled shape(s) so far", flush=True)
        if args.precision_report:
            from iln_jax.evaluation.precision import precision_report
            precision_reports[name] = precision_report(loaded.module, loaded.variables, eval_set, conv,
                                                       **{**restorer_kw, "bucket": restorer.bucket})
        first_images = first_images or [im["lq"] for im in eval_set]
    if not writer:
        return results
    summary = evaluate.write_summary(results, out, model=loaded.source)
    print(summary.read_text())
    if precision_reports:
        from iln_jax.evaluation.precision import format_report
        paths.dump_json(precision_reports, out / "precision_report.json")
        table = format_report(precision_reports, first_column="dataset")
        (out / "precision_report.md").write_text(table)
        print(table)
    if args.diagnostics:
        from iln_jax.analysis.report import analyze_model
        history = Path(args.workdir) / "diagnostics.jsonl" if args.workdir else None
        analyze_model(loaded.module, loaded.variables, first_images, Path(args.out) / "analysis",
                      label=f"{loaded.arch}/{loaded.norm}", history_path=history)
        print(f"[eval] diagnostics in {Path(args.out) / 'analysis'}")
    return results


if __name__ == "__main__":
    run_cli("eval", lambda argv: 0 if main(argv) else 1, hints={BadImageError: BAD_IMAGE_HINT})

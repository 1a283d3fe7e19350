"""Evaluate a restorer on one evaluation set: PSNR/SSIM per image (RGB and Y), PNGs, tables.

Outputs under ``out_dir/<dataset>/``: ``images/<name>.png`` (the restored uint8 images),
``results.json`` (settings, means, per-image rows) and ``results.md`` (the same as a table).
``write_summary`` adds ``out_dir/summary.{md,json}`` over datasets.

Measurement follows ``iln_jax.metrics``: the output is clipped to [0, 1] and rounded to uint8,
then PSNR/SSIM with the task's crop border, on RGB and on Y. Non-finite output pixels (fp16
overflow) are counted before quantisation and set to 0 there.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Optional

import numpy as np
from etils import epath
from tqdm import tqdm

from iln_jax import metrics, paths
from iln_jax.data.images import BadImageError
from iln_jax.errors import DataError
from iln_jax.evaluation.tasks import Convention
from iln_jax.inference.precision import nonfinite_pixels
from iln_jax.train.validate import baseline

logger = logging.getLogger(__name__)


def quantize(img: np.ndarray) -> np.ndarray:
    """Model output -> uint8, with NaN -> 0 and +-inf clipped (after they were counted)."""
    return metrics.to_uint8_image(np.nan_to_num(np.asarray(img, np.float64), nan=0.0, posinf=1.0, neginf=0.0))


def measure(pred_u8: np.ndarray, gt_u8: np.ndarray, conv: Convention) -> dict[str, float]:
    """PSNR/SSIM on RGB and (for 3-channel images) Y, with the convention's crop border."""
    cb = conv.crop_border
    out = {"psnr_rgb": metrics.psnr(pred_u8, gt_u8, crop_border=cb),
           "ssim_rgb": metrics.ssim(pred_u8, gt_u8, crop_border=cb)}
    if pred_u8.shape[-1] == 3:
        out["psnr_y"] = metrics.psnr(pred_u8, gt_u8, crop_border=cb, test_y_channel=True)
        out["ssim_y"] = metrics.ssim(pred_u8, gt_u8, crop_border=cb, test_y_channel=True)
    y = conv.for_channels(pred_u8.shape[-1]).test_y_channel
    out["psnr"], out["ssim"] = (out["psnr_y"], out["ssim_y"]) if y else (out["psnr_rgb"], out["ssim_rgb"])
    return out


def measurable(eval_set: list[dict], conv: Convention, *, dataset: str, on_bad_image: str = "error") -> list[dict]:
    """The images big enough to measure: SSIM needs an 11x11 window after the task's border crop.

    A smaller image raises :class:`BadImageError` naming it, or with ``on_bad_image="skip"`` is
    left out and listed in one warning.
    """
    need = metrics.SSIM_WINDOW + 2 * conv.crop_border
    keep, skipped = [], []
    for im in eval_set:
        h, w = im["gt"].shape[:2]
        if h >= need and w >= need:
            keep.append(im)
            continue
        problem = (f"{dataset}/{im['name']}: the target is {h}x{w}, too small to measure (PSNR/SSIM need "
                   f"{metrics.SSIM_WINDOW}x{metrics.SSIM_WINDOW} after cropping {conv.crop_border} px per side)")
        if on_bad_image != "skip":
            raise BadImageError(problem)
        skipped.append(problem)
    if skipped:
        logger.warning("left %d unusable image(s) out of %s:\n  %s", len(skipped), dataset, "\n  ".join(skipped))
    return keep


def baseline_output(lq: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic for SR, the degraded input itself otherwise."""
    return baseline(lq, scale)


def _mean(rows: list[dict], key: str) -> Optional[float]:
    vals = [r[key] for r in rows if key in r]
    return float(np.mean(vals)) if vals else None


def evaluate_dataset(restorer, eval_set: list[dict], conv: Convention, *, dataset: str,
                     out_dir: Optional[epath.Path] = None, save_images: bool = True, with_baseline: bool = True,
                     progress: bool = True, settings: Optional[dict] = None) -> dict:
    """Restore and measure every image; write PNGs and the tables when ``out_dir`` is given."""
    if not eval_set:
        raise DataError(f"{dataset}: the evaluation set is empty (every image was skipped?)")
    folder = out_dir / dataset if out_dir is not None else None
    if folder is not None and save_images:
        (folder / "images").mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        bar = tqdm(total=len(eval_set), desc=dataset, unit="img", dynamic_ncols=True)
    rows, baseline_rows = [], []
    t_start = time.perf_counter()
    outputs = None
    if getattr(restorer, "mesh", None) is not None:  # data parallel: all images at once, over the mesh
        outputs = restorer.restore_many([im["lq"] for im in eval_set])
        per_image_seconds = (time.perf_counter() - t_start) / len(eval_set)
    try:
        for i, im in enumerate(eval_set):
            t0 = time.perf_counter()
            out = restorer.restore(im["lq"]) if outputs is None else outputs[i]
            seconds = time.perf_counter() - t0 if outputs is None else per_image_seconds
            gt_u8 = metrics.to_uint8_image(im["gt"])
            if out.shape != gt_u8.shape:
                raise ValueError(f"{dataset}/{im['name']}: output {out.shape} vs target {gt_u8.shape}")
            pred_u8 = quantize(out)
            row = {"name": im["name"], "lq_shape": list(im["lq"].shape), **measure(pred_u8, gt_u8, conv),
                   "nonfinite_pixels": nonfinite_pixels(out), "seconds": seconds}
            rows.append(row)
            if with_baseline:
                baseline_rows.append(measure(quantize(baseline_output(im["lq"], conv.scale)), gt_u8, conv))
            if folder is not None and save_images:
                paths.save_png(folder / "images" / f"{im['name']}.png",
                               pred_u8[..., 0] if pred_u8.shape[-1] == 1 else pred_u8)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(psnr=f"{row['psnr']:.2f}")
    finally:
        if bar is not None:
            bar.close()
    keys = ("psnr", "ssim", "psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")
    result = {
        "dataset": dataset, "task": conv.task, "scale": conv.scale, "convention": conv.label,
        "crop_border": conv.crop_border, "num_images": len(rows),
        **{k: _mean(rows, k) for k in keys},
        "nonfinite_pixels": int(sum(r["nonfinite_pixels"] for r in rows)),
        "seconds": time.perf_counter() - t_start,
        "compiled_shapes": [list(s) for s in getattr(restorer, "compiled_shapes", [])],
        "settings": settings or {},
        "per_image": rows,
    }
    if with_baseline:
        result["baseline"] = {k: _mean(baseline_rows, k) for k in keys}
    if folder is not None:
        write_result(result, folder)
    return result


def _fmt(v, digits: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}f}"


def markdown_table(result: dict) -> str:
    conv = result["convention"]
    lines = [f"# {result['dataset']} — {result['task']}" + (f" x{result['scale']}" if result["task"] == "sr" else ""),
             "", f"Headline: PSNR/SSIM on {conv}. Settings: "
             + ", ".join(f"{k}={v}" for k, v in result.get("settings", {}).items()), "",
             "| image | PSNR | SSIM | PSNR RGB | SSIM RGB | PSNR Y | SSIM Y | non-finite px | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["per_image"]:
        lines.append(f"| {r['name']} | {_fmt(r['psnr'], 3)} | {_fmt(r['ssim'], 4)} | {_fmt(r['psnr_rgb'], 3)} | "
                     f"{_fmt(r['ssim_rgb'], 4)} | {_fmt(r.get('psnr_y'), 3)} | {_fmt(r.get('ssim_y'), 4)} | "
                     f"{r['nonfinite_pixels']} | {r['seconds']:.2f} |")
    lines.append(f"| **mean** | **{_fmt(result['psnr'], 3)}** | **{_fmt(result['ssim'], 4)}** | "
                 f"{_fmt(result['psnr_rgb'], 3)} | {_fmt(result['ssim_rgb'], 4)} | {_fmt(result['psnr_y'], 3)} | "
                 f"{_fmt(result['ssim_y'], 4)} | {result['nonfinite_pixels']} | {result['seconds']:.1f} |")
    if "baseline" in result:
        b = result["baseline"]
        name = "bicubic" if result["task"] == "sr" else "input"
        lines.append(f"| {name} (baseline) | {_fmt(b['psnr'], 3)} | {_fmt(b['ssim'], 4)} | {_fmt(b['psnr_rgb'], 3)} | "
                     f"{_fmt(b['ssim_rgb'], 4)} | {_fmt(b['psnr_y'], 3)} | {_fmt(b['ssim_y'], 4)} | | |")
    lines += ["", f"{len(result['compiled_shapes'])} compiled input shape(s): {result['compiled_shapes']}"]
    return "\n".join(lines) + "\n"


def write_result(result: dict, folder: epath.Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    paths.dump_json(result, folder / "results.json")
    (folder / "results.md").write_text(markdown_table(result))


def write_summary(results: list[dict], out_dir: epath.Path, *, model: str = "") -> epath.Path:
    """``summary.md`` / ``summary.json``: one row per dataset."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# Evaluation{': ' + model if model else ''}", "",
             "| dataset | task | images | PSNR | SSIM | convention | baseline PSNR | non-finite px |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = r.get("baseline", {}).get("psnr")
        lines.append(f"| {r['dataset']} | {r['task']}{' x' + str(r['scale']) if r['task'] == 'sr' else ''} | "
                     f"{r['num_images']} | {_fmt(r['psnr'], 3)} | {_fmt(r['ssim'], 4)} | {r['convention']} | "
                     f"{_fmt(base, 3)} | {r['nonfinite_pixels']} |")
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    paths.dump_json([{k: v for k, v in r.items() if k != "per_image"} for r in results], out_dir / "summary.json")
    return out_dir / "summary.md"

"""The low-precision table (the i-LN paper's Table 3) for one model on an evaluation set.

For each precision of ``iln_jax.inference.precision`` the images are restored, and reported are:

* ``psnr_vs_fp32``: PSNR (RGB, no crop, uint8-quantised outputs) against the fp32 output, mean over
  images (``inf`` when identical; non-finite pixels are set to 0 before quantising, so NaN images
  score low);
* ``max_abs_vs_fp32``: the largest difference of the unquantised outputs (finite pixels only);
* ``nonfinite_pixels``: output pixel positions with a NaN/inf in any channel, summed over images;
* ``psnr`` / ``ssim``: against the ground truth with the task's convention.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from iln_jax import metrics
from iln_jax.evaluation.evaluate import measure, quantize
from iln_jax.evaluation.tasks import Convention
from iln_jax.inference.precision import PRECISIONS, nonfinite_pixels
from iln_jax.inference.runner import Restorer


def precision_report(module, variables: dict, eval_set: list[dict], conv: Convention, *,
                     precisions: Sequence[str] = PRECISIONS, **restorer_kwargs) -> dict[str, dict]:
    """Restore ``eval_set`` at fp32 and at each of ``precisions``; compare each with fp32.

    Args:
      module, variables: the model and its float32 variables.
      eval_set: images as ``{"lq", "gt", "name"}`` (host arrays in [0, 1]).
      conv: the task's PSNR/SSIM convention (channel, crop border).
      precisions: names from ``iln_jax.inference.precision.PRECISIONS``; fp32 is always included.
      restorer_kwargs: passed to every :class:`~iln_jax.inference.Restorer` (padding, tiles, ...).

    Returns:
      ``{precision: row}``, each row with the PSNR against fp32, the max absolute difference, the
      count of non-finite output pixels and the PSNR/SSIM against the ground truth.
    """
    outputs = {}
    for p in dict.fromkeys(("fp32", *precisions)):
        restorer = Restorer(module, variables, precision=p, **restorer_kwargs)
        outputs[p] = [restorer.restore(im["lq"]) for im in eval_set]
    ref = outputs["fp32"]
    report = {}
    for p in precisions:
        rows = []
        for im, out, r in zip(eval_set, outputs[p], ref):
            finite = np.isfinite(out)
            diff = np.abs(np.where(finite, out, 0.0) - r)[finite]
            rows.append({"psnr_vs_fp32": metrics.psnr(quantize(out), quantize(r)),
                         "max_abs_vs_fp32": float(diff.max()) if diff.size else float("nan"),
                         "nonfinite_pixels": nonfinite_pixels(out),
                         **measure(quantize(out), metrics.to_uint8_image(im["gt"]), conv)})
        report[p] = {"psnr_vs_fp32": float(np.mean([r["psnr_vs_fp32"] for r in rows])),
                     "max_abs_vs_fp32": float(np.nanmax([r["max_abs_vs_fp32"] for r in rows])),
                     "nonfinite_pixels": int(sum(r["nonfinite_pixels"] for r in rows)),
                     "total_pixels": int(sum(o.shape[0] * o.shape[1] for o in outputs[p])),
                     "psnr": float(np.mean([r["psnr"] for r in rows])),
                     "ssim": float(np.mean([r["ssim"] for r in rows]))}
    return report


def format_report(reports: dict[str, dict[str, dict]], first_column: str = "model") -> str:
    """Markdown: one row per (model or dataset, precision)."""
    lines = [f"| {first_column} | precision | PSNR vs fp32 (dB) | max abs diff | non-finite px | PSNR vs GT | SSIM vs GT |",
             "|---|---|---|---|---|---|---|"]
    for label, rep in reports.items():
        for p, r in rep.items():
            lines.append(f"| {label} | {p} | {r['psnr_vs_fp32']:.2f} | {r['max_abs_vs_fp32']:.2e} | "
                         f"{r['nonfinite_pixels']} / {r['total_pixels']} | {r['psnr']:.3f} | {r['ssim']:.4f} |")
    return "\n".join(lines) + "\n"

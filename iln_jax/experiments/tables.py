"""Table 1 (restoration quality per norm and dataset) and Table 3 (low precision) of a grid, as
Markdown and JSON, from the runs' ``grid_result.json``."""
from __future__ import annotations

from typing import Optional

from iln_jax.inference.precision import PRECISIONS

NOT_CONVERGED = "†"


def _f(v, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def table1(results: list[dict]) -> tuple[str, dict]:
    """PSNR / SSIM per norm (rows) and dataset (columns); BatchNorm (any norm with a train mode) in
    eval mode (running statistics) and train mode (each image's own statistics); non-converging
    runs marked."""
    datasets = list(dict.fromkeys(d for r in results for d in r.get("datasets", {})))
    head = "| norm | " + " | ".join(f"{d} PSNR / SSIM" for d in datasets) + " |"
    lines = [head, "|---|" + "---|" * len(datasets)]
    data: dict = {"datasets": datasets, "rows": []}
    bicubic = {d: next((r["datasets"][d]["bicubic"] for r in results if d in r.get("datasets", {})), None)
               for d in datasets}
    for r in results:
        first = next(iter(r.get("datasets", {}).values()), {})
        modes = ["eval", "train"] if "train" in first else ["eval"]
        mark = "" if r.get("converged") else f" {NOT_CONVERGED}"
        for mode in modes:
            label = r["norm"] + (f" ({mode})" if len(modes) > 1 else "") + mark
            cells = []
            for d in datasets:
                m = r.get("datasets", {}).get(d, {}).get(mode)
                cells.append("—" if m is None else f"{_f(m['psnr'], 2)} / {_f(m['ssim'], 4)}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
            data["rows"].append({"norm": r["norm"], "mode": mode, "converged": bool(r.get("converged")),
                                 "diverged": r.get("diverged"),
                                 **{d: r.get("datasets", {}).get(d, {}).get(mode) for d in datasets}})
    lines.append("| bicubic | " + " | ".join("—" if b is None else f"{_f(b['psnr'], 2)} / {_f(b['ssim'], 4)}"
                                           for b in bicubic.values()) + " |")
    data["bicubic"] = bicubic
    lines += ["", f"{NOT_CONVERGED}: did not converge (non-finite loss, training loss not decreasing, or "
                  "non-finite pixels). PSNR/SSIM on the task's convention (SR: Y channel, border cropped by "
                  "the scale); EMA weights when the recipe keeps them."]
    return "\n".join(lines) + "\n", data


def table3(results: list[dict], precisions: Optional[tuple[str, ...]] = None) -> tuple[str, dict]:
    """Per norm and precision: PSNR vs the fp32 output, PSNR vs ground truth, non-finite pixels
    (fp16/bf16: weights and features; int8/int4: weights only, fake-quantized per channel)."""
    precisions = precisions or tuple(p for p in PRECISIONS if p != "fp32")
    if not any(r.get("precision") for r in results):
        return "(no precision report: --precisions '')\n", {"precisions": [], "rows": []}
    lines = ["| norm | " + " | ".join(f"{p} PSNR vs fp32 / vs GT / non-finite px" for p in precisions) + " |",
             "|---|" + "---|" * len(precisions)]
    data = {"precisions": list(precisions), "rows": []}
    for r in results:
        rep = r.get("precision") or {}
        cells = []
        for p in precisions:
            m = rep.get(p)
            cells.append("—" if m is None else
                         f"{_f(m['psnr_vs_fp32'], 2)} / {_f(m['psnr'], 2)} / {m['nonfinite_pixels']}")
        mark = "" if r.get("converged") else f" {NOT_CONVERGED}"
        lines.append(f"| {r['norm']}{mark} | " + " | ".join(cells) + " |")
        data["rows"].append({"norm": r["norm"], "dataset": rep.get("dataset"),
                             **{p: rep.get(p) for p in precisions}})
    dataset = next((r["precision"].get("dataset") for r in results if r.get("precision")), None)
    lines += ["", f"On {dataset}. fp16/bf16: weights and features (W+F) in that dtype; int8/int4: weights "
                  "fake-quantized (symmetric, per output channel), features fp32."]
    return "\n".join(lines) + "\n", data

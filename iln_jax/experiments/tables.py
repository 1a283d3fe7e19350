"""Table 1 (restoration quality per norm and dataset, mean ± std over seeds, and i-LN's difference
to every other norm in units of its standard error) and Table 3 (low precision) of a grid, as
Markdown and JSON, from the runs' ``grid_result.json``."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from iln_jax.experiments import convergence
from iln_jax.inference.precision import PRECISIONS

NOT_CONVERGED = "†"
REFERENCE_NORM = "iln"  # the norm Table 1 compares every other one against
FIRST_COMPARED = "layernorm"  # the paper's headline comparison, listed first

STD_NOTE = ("mean ± sample standard deviation (n − 1) over the seeds that gave a finite value; one seed: no "
            "±")
CRITERIA = ("non-finite training loss, no measurements, last logged training loss not below the first, or a "
            "non-finite PSNR or output pixel; PSNR below bicubic is not a criterion")
DIFF_NOTE = ("Δ = mean(i-LN) − mean(other) over seeds; σ_Δ = sqrt(s_iln²/n_iln + s_other²/n_other), the standard "
             "error of that difference (Welch), with s the sample standard deviations and n the seed counts; "
             "Δ/σ_Δ is how many of its standard errors the difference is. It needs >= 2 seeds on both sides.")


def _f(v, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def summarize(values: list) -> dict:
    """Mean and sample std (n − 1) of the finite values; std None below two."""
    ok = _finite(values)
    return {"mean": float(np.mean(ok)) if ok else None,
            "std": float(np.std(ok, ddof=1)) if len(ok) >= 2 else None, "n": len(ok)}


def difference(a: dict, b: dict) -> dict:
    """``a - b`` of two :func:`summarize` results, its standard error and their ratio."""
    if a["mean"] is None or b["mean"] is None:
        return {"diff": None, "std": None, "z": None}
    diff = a["mean"] - b["mean"]
    if a["std"] is None or b["std"] is None:
        return {"diff": diff, "std": None, "z": None}
    std = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    return {"diff": diff, "std": std, "z": diff / std if std > 0 else None}


def by_norm(results: list[dict]) -> dict[str, list[dict]]:
    """``{norm: its runs' results by seed}``, norms in the order of their first run."""
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(r["norm"], []).append(r)
    return {n: sorted(rs, key=lambda r: r.get("seed") or 0) for n, rs in out.items()}


def not_converged(runs: list[dict]) -> list[dict]:
    """``[{"seed", "reasons"}]`` of the runs that did not converge (the † and its footnote)."""
    return [{"seed": r.get("seed"), "reasons": reasons} for r in runs if (reasons := convergence.failures(r))]


def _mark_notes(groups: dict[str, list[dict]]) -> list[str]:
    notes = []
    for norm, runs in groups.items():
        for bad in not_converged(runs):
            seed = f", seed {bad['seed']}" if bad["seed"] is not None else ""
            notes.append(f"- {NOT_CONVERGED} {norm}{seed}: " + "; ".join(bad["reasons"]))
    return notes


def _steps(runs: list[dict]):
    steps = sorted({r.get("final_step") for r in runs if r.get("final_step") is not None})
    return steps[0] if len(steps) == 1 else (steps or None)


def _cell(stats: dict) -> str:
    psnr, ssim = stats["psnr"], stats["ssim"]
    if psnr["mean"] is None:
        return "—"
    if psnr["std"] is None:
        return f"{_f(psnr['mean'], 2)} / {_f(ssim['mean'], 4)}"
    return f"{psnr['mean']:.2f} ± {psnr['std']:.2f} / {_f(ssim['mean'], 4)} ± {_f(ssim['std'], 4)}"


def _dataset_stats(runs: list[dict], dataset: str, mode: str) -> dict:
    measured = [r.get("datasets", {}).get(dataset, {}).get(mode) or {} for r in runs]
    return {k: summarize([m.get(k) for m in measured]) | {"values": [m.get(k) for m in measured]}
            for k in ("psnr", "ssim")}


def table1(results: list[dict]) -> tuple[str, dict]:
    """PSNR / SSIM per norm (rows) and dataset (columns), mean ± std over the norm's seeds;
    BatchNorm (any norm with a train mode) in eval mode (running statistics) and train mode (each
    image's own statistics); non-converging runs marked, with the test that fired; then i-LN's
    difference to every other norm (eval mode) in units of its standard error."""
    groups = by_norm(results)
    datasets = list(dict.fromkeys(d for r in results for d in r.get("datasets", {})))
    lines = ["| norm | seeds | steps | " + " | ".join(f"{d} PSNR / SSIM" for d in datasets) + " |",
             "|---|---|---|" + "---|" * len(datasets)]
    data: dict = {"datasets": datasets, "rows": []}
    bicubic = {d: next((r["datasets"][d]["bicubic"] for r in results if d in r.get("datasets", {})), None)
               for d in datasets}
    eval_stats = {}
    for norm, runs in groups.items():
        first = next((v for r in runs for v in r.get("datasets", {}).values()), {})
        modes = ["eval", "train"] if "train" in first else ["eval"]
        bad = not_converged(runs)
        seeds = [r.get("seed") for r in runs]
        steps = _steps(runs)
        for mode in modes:
            per_dataset = {d: _dataset_stats(runs, d, mode) for d in datasets}
            if mode == "eval":
                eval_stats[norm] = per_dataset
            label = norm + (f" ({mode})" if len(modes) > 1 else "") + (f" {NOT_CONVERGED}" if bad else "")
            seed_text = ",".join(str(s) for s in seeds if s is not None) or "—"
            steps_text = "—" if steps is None else (str(steps) if isinstance(steps, int)
                                                    else f"{steps[0]}-{steps[-1]}")
            lines.append(f"| {label} | {seed_text} | {steps_text} | "
                         + " | ".join(_cell(per_dataset[d]) for d in datasets) + " |")
            row = {"norm": norm, "mode": mode, "seeds": seeds, "steps": steps, "converged": not bad,
                   "not_converged": bad}
            for d, s in per_dataset.items():
                b = bicubic[d]["psnr"] if bicubic[d] else None
                row[d] = {"psnr_mean": s["psnr"]["mean"], "psnr_std": s["psnr"]["std"],
                          "ssim_mean": s["ssim"]["mean"], "ssim_std": s["ssim"]["std"], "n": s["psnr"]["n"],
                          "psnr": s["psnr"]["values"], "ssim": s["ssim"]["values"],
                          "psnr_mean_minus_bicubic": (s["psnr"]["mean"] - b
                                                      if s["psnr"]["mean"] is not None and b is not None else None)}
            data["rows"].append(row)
    lines.append("| bicubic | | | " + " | ".join("—" if b is None else f"{_f(b['psnr'], 2)} / {_f(b['ssim'], 4)}"
                                                 for b in bicubic.values()) + " |")
    data["bicubic"] = bicubic
    lines += ["", f"PSNR / SSIM: {STD_NOTE}. On the task's convention (SR: Y channel, border cropped by the "
                  "scale); EMA weights when the recipe keeps them."]
    notes = _mark_notes(groups)
    lines += ["", f"{NOT_CONVERGED}: did not converge (in one or more seeds): {CRITERIA}"
                  + (". Here (the test that fired, with its numbers):" if notes else "; no run here."), *notes]
    md_diff, data["iln_minus"] = _differences(eval_stats, datasets, groups)
    return "\n".join(lines + md_diff) + "\n", data


def _differences(stats: dict, datasets: list[str], groups: dict) -> tuple[list[str], list[dict]]:
    if REFERENCE_NORM not in stats or len(stats) < 2:
        return [], []
    others = sorted((n for n in stats if n != REFERENCE_NORM), key=lambda n: n != FIRST_COMPARED)
    lines = ["", "## i-LN − other norms (PSNR, eval mode)", "",
             "| other norm | seeds i-LN / other | " + " | ".join(f"{d} Δ dB ± σ_Δ (Δ/σ_Δ)" for d in datasets) + " |",
             "|---|---|" + "---|" * len(datasets)]
    rows = []
    ref_seeds = [r.get("seed") for r in groups[REFERENCE_NORM]]
    for other in others:
        row = {"other": other, "seeds_iln": ref_seeds, "seeds_other": [r.get("seed") for r in groups[other]]}
        cells = []
        for d in datasets:
            diff = difference(stats[REFERENCE_NORM][d]["psnr"], stats[other][d]["psnr"])
            row[d] = diff
            if diff["diff"] is None:
                cells.append("—")
            elif diff["std"] is None:
                cells.append(f"{diff['diff']:+.2f} (σ_Δ needs >= 2 seeds each)")
            else:
                z = "—" if diff["z"] is None else f"{diff['z']:+.1f}"
                cells.append(f"{diff['diff']:+.2f} ± {diff['std']:.2f} ({z})")
        rows.append(row)
        counts = f"{len(ref_seeds)} / {len(row['seeds_other'])}"
        lines.append(f"| {other} | {counts} | " + " | ".join(cells) + " |")
    lines += ["", DIFF_NOTE]
    return lines, rows


def table3(results: list[dict], precisions: Optional[tuple[str, ...]] = None) -> tuple[str, dict]:
    """Per norm and precision: PSNR vs the fp32 output and vs ground truth (means over the norm's
    seeds), non-finite pixels (the most of any seed); fp16/bf16: weights and features; int8/int4:
    weights only, fake-quantized per channel."""
    precisions = precisions or tuple(p for p in PRECISIONS if p != "fp32")
    if not any(r.get("precision") for r in results):
        return "(no precision report: --precisions '')\n", {"precisions": [], "rows": []}
    groups = by_norm(results)
    lines = ["| norm | seeds | " + " | ".join(f"{p} PSNR vs fp32 / vs GT / non-finite px" for p in precisions) + " |",
             "|---|---|" + "---|" * len(precisions)]
    data = {"precisions": list(precisions), "rows": []}
    for norm, runs in groups.items():
        reports = [r.get("precision") or {} for r in runs]
        row = {"norm": norm, "seeds": [r.get("seed") for r in runs],
               "dataset": next((rep.get("dataset") for rep in reports if rep), None)}
        cells = []
        for p in precisions:
            measured = [rep[p] for rep in reports if rep.get(p)]
            if not measured:
                row[p] = None
                cells.append("—")
                continue
            row[p] = {"psnr_vs_fp32": summarize([m["psnr_vs_fp32"] for m in measured])["mean"],
                      "psnr": summarize([m["psnr"] for m in measured])["mean"],
                      "nonfinite_pixels": max(m["nonfinite_pixels"] for m in measured), "per_seed": measured}
            cells.append(f"{_f(row[p]['psnr_vs_fp32'], 2)} / {_f(row[p]['psnr'], 2)} / "
                         f"{row[p]['nonfinite_pixels']}")
        mark = f" {NOT_CONVERGED}" if not_converged(runs) else ""
        seed_text = ",".join(str(s) for s in row["seeds"] if s is not None) or "—"
        lines.append(f"| {norm}{mark} | {seed_text} | " + " | ".join(cells) + " |")
        data["rows"].append(row)
    dataset = next((r["precision"].get("dataset") for r in results if r.get("precision")), None)
    lines += ["", f"On {dataset}; PSNRs are means over the seeds, non-finite pixels the most of any seed. fp16/bf16: "
                  "weights and features (W+F) in that dtype; int8/int4: weights fake-quantized (symmetric, per "
                  f"output channel), features fp32. {NOT_CONVERGED}: see Table 1."]
    return "\n".join(lines) + "\n", data

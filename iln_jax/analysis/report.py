"""Offline analysis of one model (a checkpoint): every diagnostic, as JSON + PNG.

    python -m iln_jax.analysis --workdir runs/swinir_iln --out analysis/      # a training run
    python -m iln_jax.analysis --pth model.pth --arch swinir --kwargs '{...}' --out analysis/

Writes ``analysis.json`` (per-block statistics, fp16 headroom, position-bias locality, bias
alignment), ``depth_profile.png``, ``position_bias.png``, ``bias_alignment.png`` and, when the run
logged diagnostics during training (``diagnostics.jsonl``), ``dynamics.png``. A figure the model
or run cannot give (no relative-position tables, no training history, ...) is not written;
``analysis.json`` lists the files written (``written``) and, for the others, why not
(``not_written``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import jax
import numpy as np

from iln_jax.analysis import bias_alignment as bias_lib
from iln_jax import diagnostics
from iln_jax.analysis import plots, position_bias
from iln_jax.inference.precision import FP16_MAX
from iln_jax.inference.runner import input_multiple
from iln_jax.paths import dump_json


def analysis_batch(images: Sequence[np.ndarray], multiple: int, crop: int = 96) -> np.ndarray:
    """Centre crops of a common size (a multiple of the model's window) stacked into one batch."""
    side = min(crop, *(min(im.shape[:2]) for im in images))
    side = max(multiple, side - side % multiple)
    out = []
    for im in images:
        top, left = (im.shape[0] - side) // 2, (im.shape[1] - side) // 2
        out.append(np.asarray(im[top:top + side, left:left + side], np.float32))
    return np.stack(out)


FIGURES = ("depth_profile.png", "position_bias.png", "bias_alignment.png", "dynamics.png")


def analyze_model(module, variables: dict, images: Sequence[np.ndarray], out_dir: str | Path, *,
                  label: str = "model", level: str = "blocks", crop: int = 96,
                  history_path: Optional[str | Path] = None) -> dict:
    """Every diagnostic of one model into ``out_dir``; ``history_path``: the run's
    ``diagnostics.jsonl`` for ``dynamics.png`` (None: no training run given)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:  # a figure of an earlier analysis in this folder must not pass for this one's
        (out_dir / name).unlink(missing_ok=True)
    not_written: dict[str, str] = {}
    x = jax.device_put(analysis_batch(images, input_multiple(module), crop))
    per_block = diagnostics.make_stats_fn(module, level=level)(variables, x)
    result = {"label": label, "input_shape": list(x.shape), "level": level, "blocks": per_block}
    if per_block:
        peak = max(s["max_abs"] for s in per_block.values())
        result["max_abs_feature"] = peak
        result["fp16_headroom"] = FP16_MAX / peak if peak > 0 else None
        plots.plot_depth_profiles({label: per_block}, out_dir / "depth_profile.png",
                                  stats=("sq_mean", "entropy_norm", "max_abs"), title=label)
    else:
        not_written["depth_profile.png"] = f"no residual blocks captured at level {level!r}"
    images_by_table = position_bias.position_bias_images(variables["params"], module)
    if images_by_table:
        result["position_bias"] = {k: position_bias.head_locality(v) for k, v in images_by_table.items()}
        result["position_bias_mean_locality"] = position_bias.mean_locality(result["position_bias"])
        plots.plot_position_bias(images_by_table, out_dir / "position_bias.png", title=label)
    else:
        not_written["position_bias.png"] = "the model has no relative-position-bias tables"
    try:
        align = bias_lib.bias_alignment(module, variables, x)
    except ValueError as e:
        result["bias_alignment"] = {"error": str(e)}
        not_written["bias_alignment.png"] = str(e)
    else:
        result["bias_alignment"] = align
        plots.plot_bias_alignment({label: align}, out_dir / "bias_alignment.png")
    if history_path is None:
        why = "no training run given (only a run's --workdir has a diagnostics history)"
    elif Path(history_path).is_file() and Path(history_path).read_text().strip():
        why = None
    else:
        why = diagnostics.missing_reason(Path(history_path).parent) or f"no diagnostics in {history_path}"
    if why is None:
        history = diagnostics.read_diagnostics(history_path)
        plots.plot_dynamics({label: history}, out_dir / "dynamics.png", stats=("sq_mean", "entropy_norm", "max_abs"))
        result["dynamics_png"] = str(out_dir / "dynamics.png")
    else:
        not_written["dynamics.png"] = why
    result["written"] = [name for name in FIGURES if (out_dir / name).is_file()] + ["analysis.json"]
    result["not_written"] = not_written
    dump_json(result, out_dir / "analysis.json")
    return result

"""Figure 1/5/8-style plots of a grid from the runs' ``diagnostics.jsonl`` (written during
training by the loop, ``train.diagnostics_every``): feature magnitude E[x²] and channel entropy
per block vs training step and vs depth (one column per norm), and vs depth at the last step."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iln_jax.analysis import plots
from iln_jax.diagnostics import DiagnosticsLog, read_diagnostics

STATS = ("sq_mean", "entropy_norm", "max_abs")


def histories(results: list[dict]) -> dict[str, dict]:
    out = {}
    for r in results:
        path = Path(r["workdir"]) / DiagnosticsLog.FILENAME
        if path.is_file() and path.stat().st_size:
            out[r["norm"]] = read_diagnostics(path)
    return out


def last_step_profiles(hist: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{norm: {block: {stat: value at the last recorded step}}}``."""
    return {norm: {b: {s: float(h[s][-1, i]) for s in STATS if s in h} for i, b in enumerate(h["blocks"])}
            for norm, h in hist.items()}


def write_figures(results: list[dict], out: Path, title: str) -> dict:
    """``dynamics.png`` (vs step, colour = depth), ``depth_over_training.png`` (vs depth, colour =
    step), ``depth_profile.png`` (vs depth at the last step, all norms); returns the plotted numbers."""
    hist = histories(results)
    if not hist:
        return {}
    plots.plot_dynamics(hist, out / "dynamics.png", stats=STATS, title=title)
    plots.plot_depth_over_training(hist, out / "depth_over_training.png", stats=STATS, title=title)
    profiles = last_step_profiles(hist)
    plots.plot_depth_profiles(profiles, out / "depth_profile.png", stats=STATS, title=title)
    return {norm: {"steps": np.asarray(h["steps"]).tolist(), "blocks": list(h["blocks"]),
                   **{s: np.asarray(h[s]).tolist() for s in STATS if s in h}} for norm, h in hist.items()}

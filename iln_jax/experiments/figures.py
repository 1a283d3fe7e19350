"""Figure 1/5/8-style plots of a grid from the runs' ``diagnostics.jsonl`` (written during
training by the loop, every ``train.diagnostics_every`` steps): feature magnitude E[x²], channel
entropy and max |x| per block vs training step and vs depth (one column per norm), and vs depth
at the last recorded step.

With several seeds per norm, each norm is shown by its run with the smallest seed that has
diagnostics (the seed every norm of a ``--seeds 1 --seeds ...=1,2,3`` grid shares), so every curve
is one real training run; ``figures.json`` names the run of each column.

A run without diagnostics (``train.diagnostics_every`` 0, or larger than the run's steps) is left
out and named, with the reason, in ``figures.json``; with none at all no PNG is written and
``figures.json`` says why.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iln_jax.analysis import plots
from iln_jax.diagnostics import DiagnosticsLog, missing_reason, read_diagnostics

STATS = ("sq_mean", "entropy_norm", "max_abs")
FIGURES = ("dynamics.png", "depth_over_training.png", "depth_profile.png")


def shown_runs(results: list[dict]) -> tuple[dict[str, dict], dict[str, str]]:
    """``({norm: the result shown}, {"<norm> seed <k>": why it has no diagnostics})``."""
    shown, missing = {}, {}
    for r in sorted(results, key=lambda r: r.get("seed") or 0):
        reason = missing_reason(r["workdir"])
        if reason is None:
            shown.setdefault(r["norm"], r)
        else:
            missing[f"{r['norm']} seed {r.get('seed')}"] = reason
    order = list(dict.fromkeys(r["norm"] for r in results))  # the grid's norm order
    return {n: shown[n] for n in order if n in shown}, missing


def last_step_profiles(hist: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{label: {block: {stat: value at the last recorded step}}}``."""
    return {label: {b: {s: float(h[s][-1, i]) for s in STATS if s in h} for i, b in enumerate(h["blocks"])}
            for label, h in hist.items()}


def write_figures(results: list[dict], out: Path, title: str) -> dict:
    """``dynamics.png`` (vs step, colour = depth), ``depth_over_training.png`` (vs depth, colour =
    step), ``depth_profile.png`` (vs depth at the last step, all norms). Returns what
    ``figures.json`` holds: ``written`` (file names, each on disk), ``not_written`` (file: why),
    ``runs_without_diagnostics`` (run: why), ``runs`` (per norm: the run shown and the plotted
    numbers)."""
    shown, missing = shown_runs(results)
    for name in FIGURES:  # a figure of an earlier call must not outlive the data it showed
        (out / name).unlink(missing_ok=True)
    report = {"written": [], "not_written": {}, "runs_without_diagnostics": missing, "runs": {}}
    if not shown:
        why = "no run recorded diagnostics" + (f" ({len(missing)} run(s); e.g. {next(iter(missing.values()))})"
                                               if missing else "")
        report["not_written"] = {name: why for name in FIGURES}
        return report
    hist = {norm: read_diagnostics(Path(r["workdir"]) / DiagnosticsLog.FILENAME) for norm, r in shown.items()}
    labelled = {f"{norm} (seed {shown[norm].get('seed')})": h for norm, h in hist.items()}
    plots.plot_dynamics(labelled, out / "dynamics.png", stats=STATS, title=title)
    plots.plot_depth_over_training(labelled, out / "depth_over_training.png", stats=STATS, title=title)
    plots.plot_depth_profiles(last_step_profiles(labelled), out / "depth_profile.png", stats=STATS,
                              title=f"{title} (last recorded step)")
    report["written"] = [name for name in FIGURES if (out / name).is_file()]
    report["runs"] = {norm: {"seed": shown[norm].get("seed"), "workdir": shown[norm]["workdir"],
                             "steps": np.asarray(h["steps"]).tolist(), "blocks": list(h["blocks"]),
                             **{s: np.asarray(h[s]).tolist() for s in STATS if s in h}}
                      for norm, h in hist.items()}
    return report

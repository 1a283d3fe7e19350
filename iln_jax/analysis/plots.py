"""PNG figures of the diagnostics (matplotlib, Agg backend, no display needed).

* :func:`plot_dynamics` -- statistics of every block over training steps, one colour per depth
  (the paper's Fig. 1/3/5/8), for one run or several side by side (one column per run, shared y).
* :func:`plot_depth_profiles` -- statistics against block depth, one line per run/checkpoint.
* :func:`plot_depth_over_training` -- statistics against block depth, one line per recorded step
  (colour = step), one column per run: how the depth profile forms during training.
* :func:`plot_position_bias` -- per-head relative-position-bias images (Fig. 9).
* :func:`plot_bias_alignment` -- per-channel magnitude vs. bias before the final norm (Fig. 7).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

LABELS = {"sq_mean": "mean of squared features E[x²]", "mean_sq": "squared mean (E[x])²",
          "entropy": "channel entropy (nats)", "entropy_norm": "channel entropy / log C",
          "max_abs": "max |x|"}
LOG_SCALE = ("sq_mean", "mean_sq", "max_abs")


def _plt():
    # Imported on use: matplotlib is slow to import, and only the plots need it (with the file backend).
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_dynamics(histories: Mapping[str, dict] | dict, path, *, stats: Sequence[str] = ("sq_mean", "entropy_norm"),
                  title: str | None = None) -> Path:
    """``histories``: one history (``feature_stats.read_diagnostics``) or ``{run label: history}``."""
    plt = _plt()
    if "steps" in histories:
        histories = {"": histories}
    cols, rows = len(histories), len(stats)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharey="row")
    for c, (label, h) in enumerate(histories.items()):
        n = len(h["blocks"])
        colours = plt.cm.viridis(np.linspace(0, 1, max(n, 2)))
        for r, stat in enumerate(stats):
            ax = axes[r, c]
            if stat not in h:
                ax.set_visible(False)
                continue
            for b in range(n):
                ax.plot(h["steps"], h[stat][:, b], color=colours[b], lw=1.0)
            if stat in LOG_SCALE:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if r == 0 and label:
                ax.set_title(label)
            if r == rows - 1:
                ax.set_xlabel("training step")
            if c == 0:
                ax.set_ylabel(LABELS.get(stat, stat))
        sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, max(n - 1, 1)))
        fig.colorbar(sm, ax=axes[:, c].tolist(), label="block depth", fraction=0.05)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_depth_profiles(profiles: Mapping[str, Mapping[str, Mapping[str, float]]], path, *,
                        stats: Sequence[str] = ("sq_mean", "entropy_norm"), title: str | None = None) -> Path:
    """``profiles``: ``{run label: {block: {stat: value}}}`` (``feature_stats.stats_table``)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(stats), figsize=(4.5 * len(stats), 3.2), squeeze=False)
    for ax, stat in zip(axes[0], stats):
        for label, per_block in profiles.items():
            values = [per_block[b].get(stat, np.nan) for b in per_block]
            ax.plot(range(len(values)), values, marker="o", ms=3, label=label)
        if stat in LOG_SCALE:
            ax.set_yscale("log")
        ax.set_xlabel("block (forward order)")
        ax.set_ylabel(LABELS.get(stat, stat))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_depth_over_training(histories: Mapping[str, dict], path, *,
                             stats: Sequence[str] = ("sq_mean", "entropy_norm"), title: str | None = None) -> Path:
    """``histories``: ``{run label: history}`` (``feature_stats.read_diagnostics``)."""
    plt = _plt()
    cols, rows = len(histories), len(stats)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharey="row")
    for c, (label, h) in enumerate(histories.items()):
        steps = np.asarray(h["steps"])
        colours = plt.cm.plasma(np.linspace(0, 0.9, max(len(steps), 2)))
        for r, stat in enumerate(stats):
            ax = axes[r, c]
            if stat not in h:
                ax.set_visible(False)
                continue
            for t in range(len(steps)):
                ax.plot(range(len(h["blocks"])), h[stat][t], color=colours[t], lw=1.0, marker="o", ms=2)
            if stat in LOG_SCALE:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(label)
            if r == rows - 1:
                ax.set_xlabel("block (forward order)")
            if c == 0:
                ax.set_ylabel(LABELS.get(stat, stat))
        if len(steps):
            sm = plt.cm.ScalarMappable(cmap="plasma", norm=plt.Normalize(steps.min(), max(steps.max(), 1)))
            fig.colorbar(sm, ax=axes[:, c].tolist(), label="training step", fraction=0.05)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_position_bias(images: Mapping[str, np.ndarray], path, *, max_tables: int = 12, title: str | None = None) -> Path:
    """One row per attention module (first ``max_tables``), one column per head."""
    plt = _plt()
    names = list(images)[:max_tables]
    if not names:
        raise ValueError("no relative-position-bias tables to plot")
    heads = max(images[n].shape[0] for n in names)
    fig, axes = plt.subplots(len(names), heads, figsize=(1.6 * heads + 1.5, 1.6 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for h in range(heads):
            ax = axes[r, h]
            ax.set_xticks([])
            ax.set_yticks([])
            if h < images[name].shape[0]:
                ax.imshow(images[name][h], cmap="viridis")
            if r == 0:
                ax.set_title(f"head {h}", fontsize=8)
        axes[r, 0].set_ylabel(name.replace("/residual_group", "").replace("/attn", ""), fontsize=6,
                              rotation=0, ha="right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_bias_alignment(results: Mapping[str, dict] | dict, path, *, title: str | None = None) -> Path:
    """``results``: one ``bias_alignment`` result or ``{run label: result}``; one column per run."""
    plt = _plt()
    if "per_channel" in results:
        results = {"": results}
    fig, axes = plt.subplots(2, len(results), figsize=(4.8 * len(results), 6), squeeze=False)
    for c, (label, res) in enumerate(results.items()):
        pc = res["per_channel"]
        rms, mean = np.asarray(pc["rms"]), np.asarray(pc["mean"])
        order = np.argsort(-rms)
        ax = axes[0, c]
        ax.bar(np.arange(len(rms)), rms[order], color="tab:blue", alpha=0.6, label="rms_c = sqrt(E[x_c²])")
        ax.plot(np.arange(len(rms)), np.abs(mean[order]), "k.", ms=3, label="|E[x_c]|")
        ax.set_yscale("log")
        ax.set_xlabel("channel (sorted by rms)")
        ax.set_title(f"{label} dc share {res['dc_share']:.2f}".strip())
        ax.legend(fontsize=7)
        ax = axes[1, c]
        for key, colour in (("residual_bias", "tab:red"), ("final_norm_bias", "tab:green")):
            if key in pc:
                stats = res[key.replace("_bias", "")]
                ax.scatter(np.abs(pc[key]), rms, s=8, color=colour,
                           label=f"{key}: cos(b, mean) {stats['cos_bias_mean']:.2f}, "
                                 f"rank corr {stats['spearman_bias_rms']:.2f}")
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_yscale("log")
        ax.set_xlabel("|bias_c|")
        ax.set_ylabel("rms_c")
        ax.legend(fontsize=6)
    if title:
        fig.suptitle(title)
    return _save(fig, path)

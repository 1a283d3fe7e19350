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

import textwrap
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


def _figure(rows: int, cols: int, width: float, height: float, **kwargs):
    """A constrained-layout figure: labels, colour bars and legends get their own room."""
    return _plt().subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained",
                           **kwargs)


def _suptitle(fig, title: str | None) -> None:
    """The title wrapped to the figure's width (a grid's title lists every override)."""
    if title:
        chars = max(40, int(fig.get_figwidth() * 8))
        fig.suptitle(textwrap.fill(title, chars), fontsize=9)


def _plain_log_ticks(axis) -> None:
    """Log-axis tick labels as plain numbers (0.2, 3, 1e+06): a range within one decade otherwise
    shows only minor ticks, labelled 2×10⁰, 2.2×10⁰, ..."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""
    axis.set_major_formatter(Plain(labelOnlyBase=False))
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _integer_ticks(axis, most: int | str = "auto") -> None:
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(nbins=most, integer=True))


def _block_colour_bar(fig, axes, cmap: str, n: int, label: str):
    """One colour bar right of all ``axes`` for ``n`` discrete blocks (integer ticks)."""
    plt = _plt()
    sm = plt.cm.ScalarMappable(cmap=plt.get_cmap(cmap, max(n, 1)), norm=plt.Normalize(-0.5, max(n, 1) - 0.5))
    bar = fig.colorbar(sm, ax=axes, location="right", shrink=0.8, aspect=30, pad=0.01, label=label)
    _integer_ticks(bar.ax.yaxis)
    return bar


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _stat_axes(ax, stat: str, *, top_label: str, xlabel: str | None, ylabel: bool) -> None:
    if stat in LOG_SCALE:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    ax.grid(alpha=0.3)
    if top_label:
        ax.set_title(top_label, fontsize=10)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(LABELS.get(stat, stat))


def plot_dynamics(histories: Mapping[str, dict] | dict, path, *, stats: Sequence[str] = ("sq_mean", "entropy_norm"),
                  title: str | None = None) -> Path:
    """``histories``: one history (``diagnostics.read_diagnostics``) or ``{run label: history}``;
    one column per run, one row per statistic, colour = block depth (one colour bar)."""
    plt = _plt()
    if "steps" in histories:
        histories = {"": histories}
    n = max(len(h["blocks"]) for h in histories.values())
    cmap = plt.get_cmap("viridis", max(n, 1))
    fig, axes = _figure(len(stats), len(histories), 3.2, 2.6, sharey="row")
    for c, (label, h) in enumerate(histories.items()):
        for r, stat in enumerate(stats):
            ax = axes[r, c]
            if stat not in h:
                ax.set_visible(False)
                continue
            for b in range(len(h["blocks"])):
                ax.plot(h["steps"], h[stat][:, b], color=cmap(b), lw=1.0, marker="o" if len(h["steps"]) < 3 else None,
                        ms=3)
            _stat_axes(ax, stat, top_label=label if r == 0 else "",
                       xlabel="training step" if r == len(stats) - 1 else None, ylabel=c == 0)
            _integer_ticks(ax.xaxis, most=4)
    _block_colour_bar(fig, axes, "viridis", n, "block (forward order)")
    _suptitle(fig, title)
    return _save(fig, path)


def plot_depth_profiles(profiles: Mapping[str, Mapping[str, Mapping[str, float]]], path, *,
                        stats: Sequence[str] = ("sq_mean", "entropy_norm"), title: str | None = None) -> Path:
    """``profiles``: ``{run label: {block: {stat: value}}}`` (``diagnostics.stats_table``); one
    panel per statistic, one line per run, one legend."""
    fig, axes = _figure(1, len(stats), 4.0, 3.2)
    markers = "osD^v<>ph*"
    for ax, stat in zip(axes[0], stats):
        for i, (label, per_block) in enumerate(profiles.items()):
            values = [per_block[b].get(stat, np.nan) for b in per_block]
            ax.plot(range(len(values)), values, marker=markers[i % len(markers)], ms=4, lw=1.2,
                    ls="-" if i < 10 else "--", label=label)
        _stat_axes(ax, stat, top_label="", xlabel="block (forward order)", ylabel=True)
        _integer_ticks(ax.xaxis)
    if len(profiles) > 1:  # one profile: the title names it
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    _suptitle(fig, title)
    return _save(fig, path)


def plot_depth_over_training(histories: Mapping[str, dict], path, *,
                             stats: Sequence[str] = ("sq_mean", "entropy_norm"), title: str | None = None) -> Path:
    """``histories``: ``{run label: history}`` (``diagnostics.read_diagnostics``); one column per
    run, one line per recorded step, colour = step (one colour bar)."""
    plt = _plt()
    steps_all = np.concatenate([np.asarray(h["steps"]) for h in histories.values()])
    norm = plt.Normalize(steps_all.min(), max(steps_all.max(), steps_all.min() + 1))
    cmap = plt.get_cmap("plasma")

    def colour(step):
        return cmap(0.9 * norm(step))  # plasma's last tenth is too pale to see on white
    fig, axes = _figure(len(stats), len(histories), 3.2, 2.6, sharey="row")
    for c, (label, h) in enumerate(histories.items()):
        for r, stat in enumerate(stats):
            ax = axes[r, c]
            if stat not in h:
                ax.set_visible(False)
                continue
            for t, step in enumerate(h["steps"]):
                ax.plot(range(len(h["blocks"])), h[stat][t], color=colour(step), lw=1.0, marker="o", ms=2)
            _stat_axes(ax, stat, top_label=label if r == 0 else "",
                       xlabel="block (forward order)" if r == len(stats) - 1 else None, ylabel=c == 0)
            _integer_ticks(ax.xaxis)
    from matplotlib.colors import LinearSegmentedColormap
    shown = LinearSegmentedColormap.from_list("plasma_shown", [cmap(v) for v in np.linspace(0, 0.9, 64)])
    bar = fig.colorbar(plt.cm.ScalarMappable(cmap=shown, norm=norm), ax=axes, location="right", shrink=0.8,
                       aspect=30, pad=0.01, label="training step")
    _integer_ticks(bar.ax.yaxis)
    _suptitle(fig, title)
    return _save(fig, path)


def plot_position_bias(images: Mapping[str, np.ndarray], path, *, max_tables: int = 12, title: str | None = None) -> Path:
    """One row per attention module (first ``max_tables``), one column per head; each row on one
    colour scale, with its colour bar at the right (bias added to the attention logits)."""
    names = list(images)[:max_tables]
    if not names:
        raise ValueError("no relative-position-bias tables to plot")
    heads = max(images[n].shape[0] for n in names)
    labels = [name.replace("/residual_group", "").replace("/attn", "") for name in names]
    fig, axes = _figure(len(names), heads, 1.4, 1.5)
    fig.set_layout_engine("compressed")  # fixed-aspect images: no gaps between them
    fig.set_figwidth(1.4 * heads + 0.07 * max(map(len, labels)) + 0.9)  # heads, row labels, colour bars
    for r, (name, row_label) in enumerate(zip(names, labels)):
        row = images[name]
        lo, hi = float(row.min()), float(row.max())
        shown = None
        for h in range(heads):
            ax = axes[r, h]
            ax.set_xticks([])
            ax.set_yticks([])
            if h < row.shape[0]:
                shown = ax.imshow(row[h], cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1e-6)
            else:
                ax.set_visible(False)
            if r == 0:
                ax.set_title(f"head {h}", fontsize=8)
        axes[r, 0].set_ylabel(row_label, fontsize=6, rotation=0, ha="right", va="center")
        bar = fig.colorbar(shown, ax=axes[r, :], location="right", shrink=0.9, aspect=10, pad=0.01)
        bar.ax.tick_params(labelsize=6)
        bar.set_label("bias", fontsize=6)
    _suptitle(fig, title)
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

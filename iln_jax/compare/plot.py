"""``report.png`` of a run-level comparison: the losses overlaid, and both divergences against the step."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _smooth(values, width: int) -> np.ndarray:
    v = np.asarray(values, np.float64)
    if width <= 1 or len(v) < width:
        return v
    kernel = np.ones(width) / width
    return np.convolve(v, kernel, mode="valid")


def write_figure(report: dict, path: Path) -> bool:
    """Draw the figure; False (and nothing written) when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_loss, ax_div) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    steps = np.asarray(report["steps"])
    width = max(1, len(steps) // 100)
    x = steps[width - 1:] if width > 1 else steps
    ax_loss.plot(x, _smooth(report["loss_torch"], width), label="PyTorch (official)", lw=2.2, color="tab:orange")
    ax_loss.plot(x, _smooth(report["loss_jax"], width), label="iln_jax", lw=1.0, color="tab:blue")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("L1 training loss" + (f" (mean of {width} steps)" if width > 1 else ""))
    ax_loss.set_yscale("log")
    ax_loss.legend()
    title = "losses"
    if "psnr_jax" in report:
        title += (f" — final PSNR ({report['evaluated_weights']}): iln_jax {report['psnr_jax']:.3f}, "
                  f"PyTorch {report['psnr_torch']:.3f}, bicubic {report['psnr_bicubic']:.3f} dB")
    ax_loss.set_title(title, fontsize=9)

    log_steps = np.asarray(report["log_steps"])
    shown = log_steps > 0  # step 0: both start from the same weights (difference 0)
    series = [("param_rel_diff", "iln_jax vs PyTorch", "tab:blue", "-"),
              ("floor_rel_diff", "PyTorch vs PyTorch + 1 ulp (floor)", "tab:gray", "-"),
              ("ema_rel_diff", "EMA: iln_jax vs PyTorch", "tab:blue", ":"),
              ("ema_floor_rel_diff", "EMA: floor", "tab:gray", ":")]
    for key, label, color, style in series:
        values = np.asarray([np.nan if v is None else v for v in report[key]], np.float64)
        if np.all(np.isnan(values[shown])):
            continue
        ax_div.plot(log_steps[shown], np.where(values[shown] > 0, values[shown], np.nan), style, color=color,
                    label=label, lw=1.6)
    ax_div.set_yscale("log")
    ax_div.set_xlabel("step")
    ax_div.set_ylabel(r"$\|\theta_a - \theta_b\| / \|\theta_b\|$")
    ax_div.set_title("parameter divergence (log scale)", fontsize=9)
    ax_div.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

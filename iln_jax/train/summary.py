"""The end of a run: its summary (returned, and written to ``summary.json``) and the table printed."""
from __future__ import annotations

import json
from typing import Optional

import jax

from iln_jax.data.config import effective_scale
from iln_jax.train.hooks.preemption import PREEMPTED
from iln_jax.train.run import Run


def summarize(run: Run, *, params: int, start_step: int, final_step: int, status: Optional[str],
              compile_seconds: float, wall_seconds: float, train_seconds: float, reports: dict) -> dict:
    """The summary's fields, in their order; ``reports``: the hooks' entries (baseline and
    validation scores, final train loss, diagnostics file)."""
    c = run.config
    s = {"name": c.name, "workdir": str(run.workdir), "params": params, "start_step": start_step,
         "num_devices": run.parallel.num_devices, "num_processes": jax.process_count(),
         "compile_seconds": compile_seconds}
    if c.train.init_from and start_step == 0:
        s["init_from"] = c.train.init_from
    if "baseline" in reports:
        s["baseline"] = reports["baseline"]
    s.update(final_step=final_step, status=status or "completed", wall_seconds=wall_seconds,
             steps_per_sec=(final_step - start_step) / train_seconds if train_seconds else None,
             validation=reports.get("validation", {}), final_train_loss=reports.get("final_train_loss"))
    if "diagnostics" in reports:
        s["diagnostics"] = reports["diagnostics"]
    return s


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=float) + "\n"


def format_summary(s: dict, config) -> str:
    """The lines printed at the end of a run: how it ended, its speed and loss, where its
    diagnostics are, and its validation scores against the baseline (when it has any)."""
    lines = [f"== {s['name']}: {s['status']} at step {s['final_step']} "
             f"(started at {s['start_step']}), {s['wall_seconds']:.0f} s wall =="]
    if s["status"] == PREEMPTED:
        lines.append(f"not finished (SIGTERM): re-run the same command to continue from step {s['final_step']}")
    speed = []
    if s.get("compile_seconds"):
        speed.append(f"step compile {s['compile_seconds']:.1f} s")
    if s.get("steps_per_sec"):
        progressive = config.get("progressive") is not None and len(config.progressive.gt_sizes) > 1
        speed.append(f"{s['steps_per_sec']:.2f} steps/s" + ("" if progressive else
                     f", {s['steps_per_sec'] * config.data.batch_size:.1f} patches/s"))
    if speed:
        lines.append("; ".join(speed))
    if s.get("final_train_loss") is not None:
        lines.append(f"final train loss {s['final_train_loss']:.5f}")
    if s.get("diagnostics"):
        lines.append(f"per-block diagnostics in {s['diagnostics']}; plots: python -m iln_jax.analysis "
                     f"--workdir {s['workdir']} --out <dir>")
    if s.get("validation") and "baseline" in s:
        what = "Y" if config.eval.test_y_channel else "RGB"
        base_name = "bicubic" if effective_scale(config.data) > 1 else "input"
        lines.append(f"validation ({what}, crop_border {config.eval.crop_border}):")
        lines.append(f"  {'method':<14}{'PSNR (dB)':>10}{'SSIM':>9}")
        lines.append(f"  {base_name:<14}{s['baseline']['psnr']:>10.3f}{s['baseline']['ssim']:>9.4f}")
        for tag, v in s["validation"].items():
            gain = v["psnr"] - s["baseline"]["psnr"]
            lines.append(f"  {'model (' + tag + ')':<14}{v['psnr']:>10.3f}{v['ssim']:>9.4f}   ({gain:+.3f} dB)")
    return "\n".join(lines)

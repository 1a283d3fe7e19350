"""One command for a GPU or TPU VM: parity with the official models there, and the full-size train
step's speed, memory and MFU against the official PyTorch step, within a time budget.

    python bench/accelerator.py --torch-ref ~/src/SwinIR,~/src/HAT,~/src/i-LN   # on the accelerator VM
    python bench/accelerator.py --dry-run                                        # CPU: every path, tiny sizes

It writes ``docs/results/accelerator_<device>.json`` and ``.md`` (``--out-dir``), rewritten after every
section with ``"partial": true`` until the end, so a run that is killed keeps what it measured. Sections
(``bench/accelerator_sections.py``), each in its own process with its own deadline:

1. ``device``: device and versions; the measured matrix-product peak (JAX float32 at its default and at
   ``highest`` precision, bfloat16; PyTorch where it sees the device); the forward and gradient goldens
   (``tests/data``) with the parity setting (``iln_jax.parity.full_precision``: must pass) and at the
   frameworks' defaults (TF32 on NVIDIA GPUs: reported).
2. ``model:swinir-m`` (SwinIR-M x4, 4 x 48² LR patches per device) and ``model:hat`` (HAT x4, 4 x 64²):
   float32 and bfloat16, LayerNorm and i-LN, ``attention_impl`` xla and cudnn (reported unavailable where
   cuDNN's fused attention cannot run: not on a GPU, float32, or a head width that is not a multiple of 8),
   float32 at full precision last; each JAX step against the official PyTorch step on one device with
   one device's share of the batch and the same weights (``--torch-ref``; the official repositories are
   never part of this project), compile time, peak device memory, model FLOPs, FLOP/s and MFU.

The budget (``--budget-s``, default 480 s) is split as the sections start: ``device`` gets up to a
quarter, then each model a share of what is left (SwinIR-M 40 %, HAT the rest). A section skips the
configurations it has no time left for (with a note) and is killed, keeping its records, if it overruns
its deadline by more than a few seconds; the whole command ends within the budget.

``--dry-run``: tiny models, one step, on the CPU (``JAX_PLATFORMS=cpu``), a stand-in for the official
classes when no ``--torch-ref`` is given (``bench/official_standin.py``), a subset of the goldens,
written as ``accelerator_<device>_dry_run.*``: every code path in well under two minutes
(``tests/accelerator_test.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

DEVICE_SHARE = 0.25  # of the budget, at most, for the device section
RESERVE_S = 8.0      # kept back at the end for the last report
GRACE_S = 10.0       # a section may overrun its deadline by this much before it is killed
MIN_SECTION_S = 15.0  # no section is started with less left


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: check every code path")
    p.add_argument("--torch-ref", default=None,
                   help="checkouts of the official PyTorch repositories (SwinIR, HAT, i-LN), comma-separated")
    p.add_argument("--out-dir", default=str(ROOT / "docs" / "results"), help="where the JSON and Markdown go")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole command")
    p.add_argument("--models", default="swinir-m,hat", help="comma-separated: swinir-m, hat")
    p.add_argument("--norms", default="layernorm,iln", help="comma-separated, most wanted first")
    p.add_argument("--dtypes", default="float32,bfloat16", help="train.compute_dtype values, comma-separated")
    p.add_argument("--model-kwargs", default="{}",
                   help='JSON model options for every configuration, e.g. \'{"scan_layers": true}\' (faster compiles)')
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default 10; dry run 1)")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds of each step (default 3; dry run 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after compiling (default 3; dry run 0)")
    p.add_argument("--host-malloc", default="auto", help="iln_jax.host_memory policy (as bench/train_step.py)")
    # set by the orchestrator for the section processes
    p.add_argument("--section", default=None, help=argparse.SUPPRESS)
    p.add_argument("--rows", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    defaults = (1, 1, 0) if a.dry_run else (10, 3, 3)
    for key, value in zip(("steps", "rounds", "warmup"), defaults):
        if getattr(a, key) is None:
            setattr(a, key, value)
    try:
        json.loads(a.model_kwargs)
    except json.JSONDecodeError as e:
        p.error(f"--model-kwargs is not JSON: {e}")
    from accelerator_sections import MODELS
    unknown = [m for m in a.models.split(",") if m not in MODELS]
    if unknown:
        p.error(f"unknown --models {unknown}; valid: {', '.join(MODELS)}")
    return a


def run_process(cmd: list[str], env: dict, rows_path: Path, hard_stop: float) -> tuple[str, list[dict]]:
    """Run one section's process until it ends or ``hard_stop`` (epoch seconds), then kill it and its
    children; -> (status, the records it wrote, a cut-off last line left out)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        code = proc.wait(timeout=max(hard_stop - time.time(), 0.1))
        status = "done" if code == 0 else f"failed (exit code {code})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = "stopped at the time budget"
    records = []
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut off by the kill
                pass
    return status, records


def section_env(dry_run: bool) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               # JAX and PyTorch share the device: JAX takes memory as it needs it (not 75 % up front),
               # which also makes its peak-memory statistic this run's own.
               XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if dry_run:
        env["JAX_PLATFORMS"] = "cpu"
    return env


def orchestrate(a, argv: list[str]) -> tuple[Path, Path]:
    from accelerator_report import Report
    from accelerator_sections import MODELS
    import official_standin

    start = time.time()
    end = start + a.budget_s - RESERVE_S
    report = Report(["python", "bench/accelerator.py", *argv], dry_run=a.dry_run, budget_s=a.budget_s,
                    out_dir=Path(a.out_dir))
    work = Path(tempfile.mkdtemp(prefix="iln_jax_accelerator_"))
    if a.dry_run and not a.torch_ref:
        argv = [*argv, "--torch-ref", str(official_standin.write_checkout(work / "official_standin"))]
    models = [m for m in a.models.split(",") if m]
    sections = ["device", *(f"model:{m}" for m in models)]
    for i, name in enumerate(sections):
        left = end - time.time()
        if left < MIN_SECTION_S:
            report.add_section(name, "skipped", 0.0, [], note=f"time budget: {max(left, 0):.0f} s left")
            continue
        if name == "device":
            deadline = time.time() + min(left, DEVICE_SHARE * a.budget_s)
        else:
            shares = [MODELS[s.split(":", 1)[1]].share for s in sections[i:]]
            deadline = time.time() + left * shares[0] / sum(shares)
        rows = work / f"{name.replace(':', '_')}.jsonl"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--section", name, "--rows", str(rows),
               "--deadline", f"{deadline:.3f}"]
        print(f"[accelerator] section {name}: {deadline - time.time():.0f} s", flush=True)
        t0 = time.time()
        status, records = run_process(cmd, section_env(a.dry_run), rows, min(deadline + GRACE_S, end))
        report.add_section(name, status, time.time() - t0, records)
        paths = report.write(partial=True)
        print(f"[accelerator] section {name}: {status}; wrote {paths[0]}", flush=True)
    paths = report.write(partial=False)
    print(paths[1].read_text(), flush=True)
    print(f"[accelerator] wrote {paths[0]} and {paths[1]}", flush=True)
    return paths


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.section:
        from accelerator_sections import run_section
        return run_section(a)
    return orchestrate(a, argv)


if __name__ == "__main__":
    main()

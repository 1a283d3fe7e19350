"""``train_and_evaluate(config, workdir)``: the whole training job, resumable from ``workdir``.

Layout of ``workdir``::

    config.json        the run's config (also saved inside every checkpoint)
    checkpoints/<step> Orbax: train state + data iterator state + config
    tb/, metrics_*.csv, metrics.jsonl      logs (iln_jax/train/logging.py)
    diagnostics.jsonl  per-block feature statistics every ``train.diagnostics_every`` steps
    images/            restored validation images (PNG) per validation step, and references
    summary.json       final numbers (written at the end)

Start-up restores the latest complete checkpoint if there is one, so re-running the same command
after a crash or preemption continues the run; because the state carries the step and the rng and
the data iterator is restored too, the continued run computes exactly what the uninterrupted run
would have. SIGTERM checkpoints the current step and returns; a non-finite loss or gradient stops
with :class:`NonFiniteLossError` naming the step, before that state could be checkpointed.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Optional

import jax
import ml_collections

from iln_jax import analysis
from iln_jax import data as data_lib
from iln_jax import models
from iln_jax.data.config import effective_scale
from iln_jax.train import optim
from iln_jax.train.checkpoint import Checkpointer, PreemptionGuard
from iln_jax.train.configs import validate_config
from iln_jax.train.logging import MetricWriter, Progress
from iln_jax.train.parallel import DataParallel, fast_compile_options
from iln_jax.train.phases import Phase, phase_at, training_phases
from iln_jax.train.state import TrainState, create_train_state, local_replica, param_count
from iln_jax.train.step import train_step
from iln_jax.train.validate import Validator

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient norm."""


def build_model(config):
    return models.create(config.model.arch, norm=config.model.norm, **config.model.kwargs.to_dict())


def _config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def _diff_configs(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff_configs(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


class _Trainer:
    """The pieces of one run; ``train_and_evaluate`` wires them in order."""

    def __init__(self, config, workdir: Path):
        validate_config(config)
        self.config = config
        self.workdir = workdir
        self.is_main = jax.process_index() == 0
        self.parallel = DataParallel(config.train.parallel)
        self.phases = training_phases(config)
        for phase in self.phases:
            self.parallel.check_batch_size(phase.batch_size)
        self.model = build_model(config)
        self.tx, self.schedule = optim.make_optimizer(config.optim)
        p = self.phases[0].patch_size
        in_chans = config.model.kwargs.get("in_chans", 3)
        self.create_state = functools.partial(
            create_train_state, self.model, self.tx, seed=config.seed, sample_shape=(1, p, p, in_chans),
            ema=config.optim.ema_decay > 0)
        self.checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=config.train.max_to_keep,
                                         save_every=config.train.checkpoint_every,
                                         async_save=config.train.async_checkpointing)

    def data_iterator(self, phase: Phase):
        """The phase's batches (its own stream: seed + phase index, see ``phases.py``)."""
        dataset = data_lib.make_train_dataset(phase.data_config(self.config.data),
                                              seed=self.config.seed + phase.index,
                                              process_index=jax.process_index(),
                                              process_count=jax.process_count())
        return iter(dataset)

    def initial_state(self):
        """``(state, step, phase, data iterator)``: fresh, or restored from the latest checkpoint
        together with the iterator of the phase it was saved in."""
        ckpt = self.checkpointer
        start = ckpt.latest_step() or 0
        phase = phase_at(self.phases, start)
        data_iter = self.data_iterator(phase)
        if not start:
            return self.parallel.init_state(self.create_state), 0, phase, data_iter
        saved = ckpt.saved_config()
        state, step = ckpt.restore(self.parallel.abstract_state(self.create_state), data_iter)
        if saved is not None:
            changes = _diff_configs(saved, _config_dict(self.config))
            if changes:
                log.warning("Resuming with a changed config:\n  %s", "\n  ".join(changes))
        return state, step, phase, data_iter

    def compile_step(self, state, batch):
        """The step, compiled once up front (``jit``: ahead of time, so the compile time is
        measured on its own). pmap compiles on its first call: with several processes its
        ahead-of-time form expects global shapes, its call site per-process ones."""
        fn = functools.partial(train_step, model=self.parallel.model_for_training(self.model), tx=self.tx,
                               schedule=self.schedule, loss_cfg=self.config.loss,
                               ema_decay=self.config.optim.ema_decay, mixup_cfg=self.config.get("mixing"),
                               compute_dtype=self.config.train.compute_dtype)
        step_fn = self.parallel.compile(fn)
        if self.parallel.mode == "pmap":
            return step_fn, None
        options = fast_compile_options() if self.config.train.fast_compile else {}
        t0 = time.perf_counter()
        compiled = step_fn.lower(state, batch).compile(options)
        return compiled, time.perf_counter() - t0

    def diagnostics(self, start: int) -> Optional[Callable[[int, TrainState, dict], None]]:
        """``record(step, state, local_batch)``: the paper's per-block statistics into
        ``diagnostics.jsonl``. Main process only, on its own replica and inputs (no collective),
        so it costs one small forward pass every ``train.diagnostics_every`` steps."""
        every = self.config.train.diagnostics_every
        if not self.is_main or every <= 0:
            return None
        diag_fn = analysis.make_diagnostics_fn(self.model, max_images=self.config.train.diagnostics_images)
        diag_log = analysis.DiagnosticsLog(self.workdir, resume_step=start)
        device = jax.local_devices()[0]

        def record(step: int, state: TrainState, local_batch: dict) -> None:
            if step % every == 0:
                lq = jax.device_put(local_batch["lq"][:self.config.train.diagnostics_images], device)
                diag_log.write(step, diag_fn(local_replica(state.variables("raw")), lq))
        return record

    def validator(self) -> Optional[Validator]:
        if not self.is_main or self.config.eval.every < 0:
            return None
        c = self.config
        scale = effective_scale(c.data)
        return Validator(self.model, data_lib.make_eval_set(c.data), scale=scale,
                         crop_border=c.eval.crop_border if c.eval.crop_border >= 0 else (scale if scale > 1 else 0),
                         test_y_channel=c.eval.test_y_channel, bucket=c.eval.bucket,
                         save_images=c.eval.save_images, image_dir=self.workdir / "images",
                         compiler_options=fast_compile_options() if c.train.fast_compile else None)


def _close(data_iter) -> None:
    if hasattr(data_iter, "close"):
        data_iter.close()  # stops grain worker processes


def _eval_tags(config, has_ema: bool) -> list[str]:
    if config.eval.weights == "both" and has_ema:
        return ["ema", "raw"]
    return ["ema" if config.eval.weights in ("ema", "both") and has_ema else "raw"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, *,
                       on_step: Optional[Callable[[int, TrainState], None]] = None) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its checkpoints); returns the summary.

    ``on_step(step, state)`` is called after every step, after its checkpoint/validation (custom
    logging; the tests inject faults with it). Under pmap with several processes ``state`` is
    process-local.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    tr = _Trainer(config, workdir)
    c = config
    state, start, phase, data_iter = tr.initial_state()
    if tr.is_main:
        (workdir / "config.json").write_text(c.to_json_best_effort(indent=2) + "\n")
    n_params = param_count(state.params)
    say = print if tr.is_main else (lambda *a, **k: None)
    say(f"[iln_jax] {c.name}: {c.model.arch} norm={c.model.norm} {n_params / 1e6:.3f}M params, "
        f"{c.train.parallel} over {tr.parallel.num_devices} device(s) / {jax.process_count()} process(es), "
        f"global batch {phase.batch_size}, {'resuming from step ' + str(start) if start else 'from scratch'}",
        flush=True)
    if len(tr.phases) > 1:
        say("[iln_jax] progressive patches: " + ", ".join(
            f"steps {p.first_step}-{p.last_step}: {p.gt_size} px x {p.batch_size}" for p in tr.phases), flush=True)

    writer = MetricWriter(workdir, enabled=tr.is_main, resume_step=start)
    record_diagnostics = tr.diagnostics(start)
    validator = tr.validator()
    summary = {"name": c.name, "workdir": str(workdir), "params": n_params, "start_step": start,
               "num_devices": tr.parallel.num_devices, "num_processes": jax.process_count(),
               "compile_seconds": 0.0}
    if validator is not None:
        summary["baseline"] = {k: v for k, v in validator.baseline.items() if k != "per_image"}
        writer.write_scalars(start, {"baseline/psnr": validator.baseline["psnr"],
                                     "baseline/ssim": validator.baseline["ssim"]}, split="val")
    has_ema = state.ema_params is not None
    config_dict = _config_dict(c)
    progress = Progress(c.train.num_steps, start, enabled=tr.is_main and c.train.progress_bar)
    step_fn = None
    pending: Optional[tuple[int, dict]] = None
    sums, n_sum = {}, 0
    t_log, steps_since_log, train_time, excluded = time.perf_counter(), 0, 0.0, 0.0
    step, stopped = start, None

    def check(item) -> dict:
        """Fetch a step's metrics; raise if its loss or gradient is not finite."""
        s, m = item
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
            tr.checkpointer.wait()
            raise NonFiniteLossError(
                f"Non-finite training loss at step {s} (loss={m['loss']}, grad_norm={m['grad_norm']}); "
                f"stopping. The last good checkpoint is step {tr.checkpointer.latest_step()} in "
                f"{tr.checkpointer.directory}")
        return m

    def flush_pending():
        nonlocal pending, n_sum
        if pending is not None:
            m = check(pending)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            n_sum += 1
            pending = None
            return m
        return None

    def validate(at_step: int) -> dict:
        out = {}
        for tag in _eval_tags(c, has_ema):
            scores = validator(state.variables(tag), at_step, tag=tag)
            out[tag] = scores
            writer.write_scalars(at_step, {f"{tag}/psnr": scores["psnr"], f"{tag}/ssim": scores["ssim"]},
                                 split="val")
            writer.write_images(at_step, {f"{tag}/{k}": v for k, v in scores["images"].items()})
            progress.write(f"[val] step {at_step} {tag}: PSNR {scores['psnr']:.3f} dB  SSIM {scores['ssim']:.4f}  "
                           f"(baseline {validator.baseline['psnr']:.3f} / {validator.baseline['ssim']:.4f})")
        return out

    val_scores, last_row = {}, {}
    try:
        with PreemptionGuard() as guard:
            for step in range(start + 1, c.train.num_steps + 1):
                if not phase.contains(step):  # the next progressive phase: new patch/batch size
                    _close(data_iter)
                    phase = phase_at(tr.phases, step)
                    data_iter = tr.data_iterator(phase)
                    step_fn = None
                    progress.write(f"[iln_jax] step {step}: phase {phase.index + 1}/{len(tr.phases)}, "
                                   f"{phase.gt_size} px patches, batch {phase.batch_size}")
                local_batch = next(data_iter)
                batch = tr.parallel.shard_batch(local_batch)
                if step_fn is None:
                    t_compile = time.perf_counter()
                    step_fn, compile_s = tr.compile_step(state, batch)
                    summary["compile_seconds"] += compile_s or 0.0
                    excluded += time.perf_counter() - t_compile
                state, metrics = step_fn(state, batch)
                flush_pending()  # the previous step's metrics: one step in flight keeps devices busy
                pending = (step, metrics)
                steps_since_log += 1
                last = step == c.train.num_steps
                if step % c.train.log_every == 0 or last:
                    flush_pending()
                    elapsed = time.perf_counter() - t_log - excluded
                    train_time += elapsed
                    row = {k: v / n_sum for k, v in sums.items()}
                    row["steps_per_sec"] = steps_since_log / max(elapsed, 1e-9)
                    row["patches_per_sec"] = row["steps_per_sec"] * phase.batch_size
                    if len(tr.phases) > 1:
                        row["patch_size"] = phase.gt_size
                    writer.write_scalars(step, row)
                    last_row = row
                    progress.update(steps_since_log, {"loss": row["loss"], "lr": row["lr"]})
                    sums.clear()
                    n_sum, steps_since_log, t_log, excluded = 0, 0, time.perf_counter(), 0.0
                t_aside = time.perf_counter()  # checkpoints and validation do not count as training time
                if record_diagnostics is not None:
                    record_diagnostics(step, state, local_batch)
                if step % c.train.checkpoint_every == 0 or last:
                    flush_pending()
                    tr.checkpointer.save(step, tr.parallel.to_canonical(state), data_iter, config_dict, force=last)
                if validator is not None and (last or c.eval.every > 0 and step % c.eval.every == 0):
                    flush_pending()
                    val_scores = validate(step)
                excluded += time.perf_counter() - t_aside
                if on_step is not None:
                    on_step(step, state)
                if guard.reached(step):
                    flush_pending()
                    tr.checkpointer.save(step, tr.parallel.to_canonical(state), data_iter, config_dict, force=True)
                    stopped = "preempted"
                    progress.write(f"[iln_jax] preempted (SIGTERM): saved step {step}; re-run the same "
                                   f"command to resume")
                    break
            flush_pending()
        if validator is not None and not val_scores and stopped is None:
            val_scores = validate(step)  # e.g. resumed at the final step
    finally:
        progress.close()
        tr.checkpointer.close()
        writer.close()
        _close(data_iter)

    summary.update(final_step=step, status=stopped or "completed", wall_seconds=time.time() - t_start,
                   steps_per_sec=(step - start) / train_time if train_time else None,
                   validation={t: {k: v for k, v in s.items() if k not in ("images",)}
                               for t, s in val_scores.items()})
    summary["final_train_loss"] = last_row.get("loss")
    if record_diagnostics is not None:
        summary["diagnostics"] = str(workdir / analysis.DiagnosticsLog.FILENAME)
    if tr.is_main:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        print(format_summary(summary, c), flush=True)
    return summary


def format_summary(s: dict, config) -> str:
    lines = [f"== {s['name']}: {s['status']} at step {s['final_step']} "
             f"(started at {s['start_step']}), {s['wall_seconds']:.0f} s wall =="]
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
    if "baseline" in s:
        what = "Y" if config.eval.test_y_channel else "RGB"
        base_name = "bicubic" if effective_scale(config.data) > 1 else "input"
        lines.append(f"validation ({what}, crop_border {config.eval.crop_border}):")
        lines.append(f"  {'method':<14}{'PSNR (dB)':>10}{'SSIM':>9}")
        lines.append(f"  {base_name:<14}{s['baseline']['psnr']:>10.3f}{s['baseline']['ssim']:>9.4f}")
        for tag, v in s.get("validation", {}).items():
            gain = v["psnr"] - s["baseline"]["psnr"]
            lines.append(f"  {'model (' + tag + ')':<14}{v['psnr']:>10.3f}{v['ssim']:>9.4f}   ({gain:+.3f} dB)")
    return "\n".join(lines)

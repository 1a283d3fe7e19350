"""``train_and_evaluate(config, workdir)``: the whole training job, resumable from ``workdir``.

Layout of ``workdir``::

    config.json        the run's config (also saved inside every checkpoint)
    checkpoints/<step> Orbax: train state + data iterator state + config
    tb/, metrics_*.csv, metrics.jsonl      logs (iln_jax/train/logging.py)
    diagnostics.jsonl  per-block feature statistics every ``train.diagnostics_every`` steps
    images/            restored validation images (PNG) per validation step, and references
    summary.json       final numbers (written at the end)

    LOCK               held by the running run (``workdir_lock.py``): one run per directory
    config_changes.jsonl  the config changes of each resume (``resume.py``)

Start-up, in this order: check the config and build the model (bad keys and constructor
arguments fail here, before any file is touched); lock the work directory; find the newest
complete checkpoint (``checkpoint.py``: damaged newer ones are reported and moved aside); check
the saved config and state tree against the new ones (``resume.py``: a model change refuses);
restore. Re-running the same command after a crash or preemption therefore continues the run;
because the state carries the step and the rng and the data iterator is restored too, the
continued run computes exactly what the uninterrupted run would have. A new run with
``train.init_from`` starts from another run's weights.

While running, the host stays ahead of the devices: batches are transferred ``train.prefetch``
steps ahead (``prefetch.py``), the step metrics stay on the devices until they are fetched together
every ``train.log_every`` steps, and the preemption agreement between hosts goes through JAX's
coordination service, not a device collective. SIGTERM checkpoints the current step and returns
(``preemption.py``: a loop that cannot get there within ``train.sigterm_grace_seconds`` is
interrupted); a non-finite loss or gradient stops with :class:`NonFiniteLossError` naming the step
and the fetched window it was found in, before that state could be checkpointed (the metrics are
always fetched and checked before a save); a failed checkpoint save or log write stops with
:class:`StorageError` naming the path, keeping every checkpoint saved before. The lock is released
on every way out.
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import math
import time
import sys
from typing import Callable, Optional

import jax
import ml_collections
from etils import epath

from iln_jax import analysis
from iln_jax import data as data_lib
from iln_jax import models, paths, xla_options
from iln_jax.data.config import effective_scale
from iln_jax.errors import ConfigError, IlnJaxError, StorageError, TerminatedError
from iln_jax.train import compile_cache, resume
from iln_jax.train.checkpoint import Checkpointer, storage_reason
from iln_jax.train.orbax_noise import quiet_orbax_errors
from iln_jax.train.configs import validate_config
from iln_jax.train.logging import MetricWriter, Progress
from iln_jax.train.parallel import DataParallel
from iln_jax.train.phases import Phase, phase_at, training_phases
from iln_jax.train.state import TrainState, local_replica, param_count, relayout_state
from iln_jax.train.step_factory import make_step
from iln_jax.train.preemption import PreemptionGuard
from iln_jax.train.prefetch import DevicePrefetcher
from iln_jax.train.validate import Validator
from iln_jax.train.workdir_lock import WorkdirLock

log = logging.getLogger(__name__)


class NonFiniteLossError(IlnJaxError, FloatingPointError):
    """Training produced a NaN/inf loss or gradient norm."""


def build_model(config):
    """The config's model; a constructor argument it cannot be built with is a :class:`ConfigError`
    naming the ``model.kwargs`` key."""
    try:
        return models.create(config.model.arch, norm=config.model.norm, **config.model.kwargs.to_dict())
    except ConfigError as e:
        raise ConfigError(f"config model.kwargs: {e}") from None


def _config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


class _Trainer:
    """The pieces of one run; ``train_and_evaluate`` wires them in order."""

    def __init__(self, config, workdir: epath.Path, model, *, lock: WorkdirLock, guard: PreemptionGuard):
        self.config = config
        self.config_dict = _config_dict(config)
        self.workdir = workdir
        self.lock, self.guard = lock, guard
        self.closers: list[Callable[[], None]] = []  # run at the end, whatever happens (_close_all)
        self.is_main = jax.process_index() == 0
        self.parallel = DataParallel(config.train.parallel)
        self.phases = training_phases(config)
        for phase in self.phases:
            self.parallel.check_batch_size(phase.batch_size)
        self.model = model
        self.init_state, self.step_fn = make_step(config, model, self.parallel,
                                                  patch_size=self.phases[0].patch_size)
        self.checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=config.train.max_to_keep,
                                         save_every=config.train.checkpoint_every,
                                         async_save=config.train.async_checkpointing)

    def say(self, message: str) -> None:
        """Print on the main process."""
        if self.is_main:
            print(message, flush=True)

    def prefetch(self, data_iter, phase: Phase, done: int) -> DevicePrefetcher:
        """The phase's batches, ``train.prefetch`` of them on the devices ahead of their step
        (none read beyond the phase's last step; ``done``: the last step already trained)."""
        last = min(phase.last_step, self.config.train.num_steps)
        return DevicePrefetcher(data_iter, self.parallel.shard_batch, size=self.config.train.get("prefetch", 2),
                                limit=max(0, last - done))

    def data_iterator(self, phase: Phase):
        """The phase's batches (its own stream: seed + phase index, see ``phases.py``)."""
        dataset = data_lib.make_train_dataset(phase.data_config(self.config.data),
                                              seed=self.config.seed + phase.index,
                                              process_index=jax.process_index(),
                                              process_count=jax.process_count())
        return iter(dataset)

    def initial_state(self):
        """``(state, step, phase, data iterator, where it came from)``: restored from the newest
        complete checkpoint together with the iterator of the phase it was saved in (after the
        checks of ``resume.py``), or fresh (from ``train.init_from``'s weights if set)."""
        ckpt = self.checkpointer
        step = ckpt.newest_complete_step()
        if step is None:
            phase = phase_at(self.phases, 0)
            state = self.init_state()
            origin = "from scratch"
            if self.config.train.get("init_from"):
                state, source, notes = resume.init_from_weights(self.config.train.init_from, state,
                                                                workdir=self.workdir, config=self.config_dict,
                                                                model=self.model)
                origin = f"from the weights of {source}"
                if notes:
                    self.say(f"[iln_jax] init_from: this run's model differs from {source}'s in: " + "; ".join(notes))
            return state, 0, phase, self.data_iterator(phase), origin
        saved = ckpt.saved_config(step)
        if saved is None and (self.workdir / "config.json").is_file():
            saved = json.loads((self.workdir / "config.json").read_text())
        changes = resume.check_resume_config(saved, self.config_dict, workdir=self.workdir, step=step)
        saved_layout = resume.saved_scan_layers(saved)
        saved_model = self.model
        if saved_layout is not None and saved_layout != bool(self.model.scan_layers):
            saved_model = self.model.clone(scan_layers=saved_layout)  # restore as saved, then convert
        abstract = self.init_state.for_model(saved_model).abstract()
        resume.check_state_tree(ckpt.state_metadata(step), abstract, workdir=self.workdir, step=step)
        ckpt.set_aside_broken()
        if changes:
            self.say(f"[iln_jax] resuming step {step} with a changed config (logged in {resume.CHANGES_FILE}):\n  "
                + "\n  ".join(resume.change_line(*c) for c in changes))
            if self.is_main:
                resume.log_config_changes(self.workdir, step, changes)
        phase = phase_at(self.phases, step)
        data_iter = self.data_iterator(phase)
        try:
            state, step = ckpt.restore(abstract, data_iter, step)
        except BaseException:
            _close(data_iter)
            raise
        if saved_model is not self.model:
            state = jax.jit(functools.partial(relayout_state, source_model=saved_model, target_model=self.model),
                            out_shardings=self.parallel.replicated)(state)
            layouts = {True: "scanned", False: "unrolled"}
            self.say(f"[iln_jax] checkpoint step {step} holds the {layouts[saved_layout]} layout: converted to "
                     f"the {layouts[not saved_layout]} one (scan_layers={not saved_layout})")
        return state, step, phase, data_iter, f"resuming from step {step}"

    def compile_step(self, state, batch):
        """The step, compiled once up front (``jit``: ahead of time, so the compile time is
        measured on its own). pmap compiles on its first call: with several processes its
        ahead-of-time form expects global shapes, its call site per-process ones."""
        if self.parallel.mode == "pmap":
            return self.step_fn, None
        options = xla_options.compiler_options(fast=self.config.train.fast_compile)
        t0 = time.perf_counter()
        compiled = self.step_fn.lower(state, batch).compile(options)
        return compiled, time.perf_counter() - t0

    def diagnostics(self, start: int) -> Optional[Callable[[int, TrainState, dict, object], None]]:
        """``record(step, state, local_batch, batch)``: the paper's per-block statistics of the
        first ``train.diagnostics_images`` inputs of the global batch into ``diagnostics.jsonl``,
        one small forward pass every ``train.diagnostics_every`` steps. ``mesh``: on the mesh, by
        every process, on the batch already on the devices; ``pmap``: process 0 on its replica."""
        every = self.config.train.diagnostics_every
        on_mesh = self.parallel.mode == "mesh"
        if every <= 0 or not (self.is_main or on_mesh):
            return None
        n = self.config.train.diagnostics_images
        diag_fn = analysis.make_diagnostics_fn(self.model, max_images=n)
        diag_log = analysis.DiagnosticsLog(self.workdir, resume_step=start, enabled=self.is_main)
        device = jax.local_devices()[0]

        def record(step: int, state: TrainState, local_batch: dict, batch) -> None:
            if step % every:
                return
            if on_mesh:
                diag_log.write(step, diag_fn(state.variables("raw"), batch["lq"]))
            else:
                lq = jax.device_put(local_batch["lq"][:n], device)
                diag_log.write(step, diag_fn(local_replica(state.variables("raw")), lq))
        return record

    def validator(self) -> Optional[Validator]:
        """Every process validates (data parallel over the mesh); process 0 writes."""
        if self.config.eval.every < 0:
            return None
        c = self.config
        scale = effective_scale(c.data)
        return Validator(self.model, data_lib.make_eval_set(c.data), scale=scale, mesh=self.parallel.mesh,
                         write=self.is_main,
                         crop_border=c.eval.crop_border if c.eval.crop_border >= 0 else (scale if scale > 1 else 0),
                         test_y_channel=c.eval.test_y_channel, bucket=c.eval.bucket,
                         save_images=c.eval.save_images, image_dir=self.workdir / "images",
                         compiler_options=xla_options.compiler_options(fast=c.train.fast_compile))


def _close(data_iter) -> None:
    if hasattr(data_iter, "close"):
        data_iter.close()  # stops grain worker processes


def _eval_tags(config, has_ema: bool) -> list[str]:
    if config.eval.weights == "both" and has_ema:
        return ["ema", "raw"]
    return ["ema" if config.eval.weights in ("ema", "both") and has_ema else "raw"]


def _write_text(path: epath.Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror or e}; stopping") from None


def _as_storage_error(e: OSError, workdir: epath.Path) -> Optional[StorageError]:
    """A write the storage refused (full disk, quota, read-only, I/O error), as a StorageError."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES):
        return StorageError(f"cannot write {e.filename or workdir}: {storage_reason(e)}; stopping")
    return None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: paths.PathLike, *,
                       on_step: Optional[Callable[[int, TrainState], None]] = None) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its checkpoints); returns the summary.

    ``on_step(step, state)`` is called after every step, after its checkpoint/validation (custom
    logging; the tests inject faults with it). Under pmap with several processes ``state`` is
    process-local.

    Raises the errors of :mod:`iln_jax.errors` (a bad config, a busy work directory, a refused
    resume, a failed save, ...) with messages meant to be printed as they are.
    """
    workdir = paths.as_path(workdir)  # a local path or a URL (gs://...): the same code path
    validate_config(config)
    model = build_model(config)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the work directory {workdir}: {e.strerror or e}") from None
    _, cache_note = compile_cache.enable(config.train.get("compilation_cache_dir", "auto"), workdir)
    if jax.process_index() == 0:
        print(f"[iln_jax] {cache_note}", flush=True)
    quiet_orbax_errors()  # failures are reported once, as this project's errors
    grace = config.train.get("sigterm_grace_seconds", 60.0)
    with WorkdirLock(workdir) as lock, PreemptionGuard(grace_seconds=grace, on_abandon=lock.release) as guard:
        try:
            return _train(_Trainer(config, workdir, model, lock=lock, guard=guard), on_step)
        except OSError as e:
            error = _as_storage_error(e, workdir)
            if error is None or isinstance(e, IlnJaxError):
                raise
            raise error from None


def _train(tr: _Trainer, on_step) -> dict:
    t_start = time.time()
    try:
        return _train_loop(tr, *tr.initial_state(), on_step=on_step, t_start=t_start)
    finally:
        _close_all(tr.closers)


def _close_all(closers: list) -> None:
    """Run every closer (last registered first) even if some fail; re-raise the first failure
    unless an exception is already propagating."""
    first = None
    for close in reversed(closers):
        try:
            close()
        except Exception as e:  # noqa: BLE001
            first = first or e
    if first is not None and sys.exc_info()[0] is None:
        raise first


def _train_loop(tr: _Trainer, state, start: int, phase: Phase, data_iter, origin: str, *, on_step,
                t_start: float) -> dict:
    c, workdir, guard, closers = tr.config, tr.workdir, tr.guard, tr.closers
    data_iter = tr.prefetch(data_iter, phase, start)
    closers.append(lambda: _close(data_iter))  # reads the variable: the current phase's iterator
    if tr.is_main:
        _write_text(workdir / "config.json", c.to_json_best_effort(indent=2) + "\n")
    n_params = param_count(state.params)
    tr.say(f"[iln_jax] {c.name}: {c.model.arch} norm={c.model.norm} {n_params / 1e6:.3f}M params, "
           f"{c.train.parallel} over {tr.parallel.num_devices} device(s) / {jax.process_count()} process(es), "
           f"global batch {phase.batch_size}, {origin}")
    if len(tr.phases) > 1:
        tr.say("[iln_jax] progressive patches: " + ", ".join(
            f"steps {p.first_step}-{p.last_step}: {p.gt_size} px x {p.batch_size}" for p in tr.phases))

    checkpointer = tr.checkpointer
    terminating = False

    def close_checkpointer():
        checkpointer.close(wait=not terminating)

    closers.append(close_checkpointer)
    writer = MetricWriter(workdir, enabled=tr.is_main, resume_step=start)
    closers.append(writer.close)
    record_diagnostics = tr.diagnostics(start)
    validator = tr.validator()
    summary = {"name": c.name, "workdir": str(workdir), "params": n_params, "start_step": start,
               "num_devices": tr.parallel.num_devices, "num_processes": jax.process_count(),
               "compile_seconds": 0.0}
    if c.train.get("init_from") and start == 0:
        summary["init_from"] = c.train.init_from
    if validator is not None:
        summary["baseline"] = {k: v for k, v in validator.baseline.items() if k != "per_image"}
        writer.write_scalars(start, {"baseline/psnr": validator.baseline["psnr"],
                                     "baseline/ssim": validator.baseline["ssim"]}, split="val")
    has_ema = state.ema_params is not None
    config_dict = tr.config_dict
    progress = Progress(c.train.num_steps, start, enabled=tr.is_main and c.train.progress_bar)
    closers.append(progress.close)
    step_fn = None
    # The metrics of the steps since the last fetch stay on the devices; one device_get fetches
    # them every ``log_every`` steps (and before a checkpoint or a validation), so the host never
    # waits for a step it has just dispatched.
    pending: list[tuple[int, dict]] = []
    sums, n_sum = {}, 0
    t_log, steps_since_log, train_time, excluded = time.perf_counter(), 0, 0.0, 0.0
    step, stopped = start, None

    def check(fetched: list[tuple[int, dict]]) -> None:
        """Raise if a fetched step's loss or gradient is not finite (the first such step)."""
        for s, m in fetched:
            if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
                checkpointer.wait()
                last = checkpointer.latest_step()
                where = (f"The last good checkpoint is step {last} in {checkpointer.directory}" if last is not None
                         else "No checkpoint was saved yet (re-running starts from scratch)")
                window = (f"steps {fetched[0][0]}-{fetched[-1][0]}" if len(fetched) > 1 else f"step {s}")
                raise NonFiniteLossError(
                    f"Non-finite training loss at step {s} (loss={m['loss']}, grad_norm={m['grad_norm']}; the first "
                    f"non-finite one of {window}, whose metrics were fetched together); stopping. {where}. "
                    f"Lower optim.lr, add warmup (optim.warmup_steps) or clip gradients (optim.grad_clip)")

    def flush_pending() -> None:
        nonlocal n_sum
        if not pending:
            return
        fetched = [(s, {k: float(v) for k, v in m.items()}) for s, m in jax.device_get(pending)]
        pending.clear()
        check(fetched)
        for _, m in fetched:
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            n_sum += 1

    def validate(at_step: int) -> dict:
        out = {}
        for tag in _eval_tags(c, has_ema):
            scores = validator(tr.parallel.to_canonical(state.variables(tag)), at_step, tag=tag)
            out[tag] = scores
            writer.write_scalars(at_step, {f"{tag}/psnr": scores["psnr"], f"{tag}/ssim": scores["ssim"]},
                                 split="val")
            writer.write_images(at_step, {f"{tag}/{k}": v for k, v in scores["images"].items()})
            if tr.is_main:
                progress.write(f"[val] step {at_step} {tag}: PSNR {scores['psnr']:.3f} dB  SSIM {scores['ssim']:.4f}  "
                               f"(baseline {validator.baseline['psnr']:.3f} / {validator.baseline['ssim']:.4f})")
        return out

    val_scores, last_row = {}, {}
    try:
        steps = range(start + 1, c.train.num_steps + 1)
        if guard.requested and jax.process_count() == 1:
            stopped, steps = "preempted", ()  # SIGTERM during start-up: nothing new to save
            progress.write("[iln_jax] preempted (SIGTERM) before the first step; re-run the same command to resume")
        for step in steps:
            if not phase.contains(step):  # the next progressive phase: new patch/batch size
                _close(data_iter)
                phase = phase_at(tr.phases, step)
                data_iter = tr.prefetch(tr.data_iterator(phase), phase, step - 1)
                step_fn = None
                progress.write(f"[iln_jax] step {step}: phase {phase.index + 1}/{len(tr.phases)}, "
                               f"{phase.gt_size} px patches, batch {phase.batch_size}")
            local_batch, batch = next(data_iter)  # already on the devices (prefetch.py)
            if step_fn is None:
                t_compile = time.perf_counter()
                step_fn, compile_s = tr.compile_step(state, batch)
                summary["compile_seconds"] += compile_s or 0.0
                excluded += time.perf_counter() - t_compile
            state, metrics = step_fn(state, batch)
            pending.append((step, metrics))
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
                record_diagnostics(step, state, local_batch, batch)
            if step % c.train.checkpoint_every == 0 or last:
                flush_pending()
                checkpointer.save(step, tr.parallel.to_canonical(state), data_iter, config_dict, force=last)
            if validator is not None and (last or c.eval.every > 0 and step % c.eval.every == 0):
                flush_pending()
                val_scores = validate(step)
            excluded += time.perf_counter() - t_aside
            if on_step is not None:
                on_step(step, state)
            checkpointer.check()  # a failed background save stops the run now, not an interval later
            tr.lock.check()
            if guard.reached(step):
                flush_pending()
                checkpointer.save(step, tr.parallel.to_canonical(state), data_iter, config_dict, force=True)
                stopped = "preempted"
                progress.write(f"[iln_jax] preempted (SIGTERM): saved step {step}; re-run the same "
                               f"command to resume")
                break
        flush_pending()
        if validator is not None and not val_scores and stopped is None:
            val_scores = validate(step)  # e.g. resumed at the final step
        closers.remove(close_checkpointer)
        checkpointer.close()  # waits for (and checks) the last save
    except TerminatedError:
        terminating = True
        raise
    except KeyboardInterrupt:
        progress.write(f"[iln_jax] interrupted (Ctrl-C) at step {step}; re-run the same command to resume from "
                       f"the newest complete checkpoint in {checkpointer.directory}")
        raise

    summary.update(final_step=step, status=stopped or "completed", wall_seconds=time.time() - t_start,
                   steps_per_sec=(step - start) / train_time if train_time else None,
                   validation={t: {k: v for k, v in s.items() if k not in ("images",)}
                               for t, s in val_scores.items()})
    summary["final_train_loss"] = last_row.get("loss")
    if record_diagnostics is not None:
        summary["diagnostics"] = str(workdir / analysis.DiagnosticsLog.FILENAME)
    if tr.is_main:
        _write_text(workdir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
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

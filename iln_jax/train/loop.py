"""``train_and_evaluate(config, workdir)``: the whole training job, resumable from ``workdir``.

Layout of ``workdir``::

    config.json        the run's config (also saved inside every checkpoint)
    checkpoints/<step> Orbax: train state + data iterator state + config
    tb/, metrics_*.csv, metrics.jsonl      logs (iln_jax/train/logging.py)
    diagnostics.jsonl  per-block feature statistics every ``train.diagnostics_every`` steps and at the last
    images/            restored validation images (PNG) per validation step, and references
    summary.json       final numbers (written at the end; ``status`` completed or preempted)

    LOCK               held by the running run (``workdir_lock.py``): one run per directory
    config_changes.jsonl  the config changes of each resume (``resume.py``)

The job, in order: check the config and build the model (bad keys and constructor arguments fail
here, before any file is touched); lock the work directory; build the run's fixed pieces
(``run.py``); start from the newest complete checkpoint, another run's weights or nothing
(``startup.py``); then the loop itself, :func:`train_steps`: for every step the next batch
(``batches.py``: a new stream at each progressive phase), one compiled train step, and the hooks
(``hooks/``: log rows, diagnostics, checkpoints, validation, the caller's ``on_step``, the lock,
preemption); last the summary (``summary.py``). Re-running the same command after a crash or
preemption continues the run exactly; a new run with ``train.init_from`` starts from another
run's weights.

While running, the host stays ahead of the devices: batches are transferred ``train.prefetch``
steps ahead, the step metrics stay on the devices until they are fetched together every
``train.log_every`` steps, and the preemption agreement between hosts goes through JAX's
coordination service, not a device collective. SIGTERM checkpoints the current step and returns
(``preemption.py``: a loop that cannot get there within ``train.sigterm_grace_seconds`` is
interrupted); a non-finite loss or gradient stops with :class:`NonFiniteLossError` naming the step
and the fetched window it was found in, before that state could be checkpointed; a failed
checkpoint save or log write stops with :class:`StorageError` naming the path, keeping every
checkpoint saved before. The lock is released on every way out.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, Optional

import jax
import ml_collections
from etils import epath

from iln_jax import models, paths
from iln_jax.errors import ConfigError, StorageError, TerminatedError
from iln_jax.train import compile_cache, hooks, startup, storage
from iln_jax.train.batches import PhaseBatches
from iln_jax.train.clock import TrainClock
from iln_jax.train.compiled_step import CompiledStep
from iln_jax.train.configs import validate_config
from iln_jax.train.hooks import NonFiniteLossError, Step  # noqa: F401  (NonFiniteLossError: importable from here)
from iln_jax.train.logging import MetricWriter, Progress
from iln_jax.train.orbax_noise import quiet_orbax_errors
from iln_jax.train.preemption import PreemptionGuard
from iln_jax.train.run import Run
from iln_jax.train.state import TrainState, param_count
from iln_jax.train.summary import format_summary, summarize, summary_json
from iln_jax.train.workdir_lock import WorkdirLock

OnStep = Callable[[int, TrainState], None]


def build_model(config):
    """The config's model; a constructor argument it cannot be built with is a :class:`ConfigError`
    naming the ``model.kwargs`` key."""
    try:
        return models.create(config.model.arch, norm=config.model.norm, **config.model.kwargs.to_dict())
    except ConfigError as e:
        raise ConfigError(f"config model.kwargs: {e}") from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: paths.PathLike, *,
                       on_step: Optional[OnStep] = None) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its checkpoints); returns the summary.

    ``on_step(step, state)`` is called after every step, after its checkpoint/validation (custom
    logging; the tests inject faults with it). Under pmap with several processes ``state`` is
    process-local.

    Raises the errors of :mod:`iln_jax.errors` (a bad config, a busy work directory, a refused
    resume, a failed save, ...) with messages meant to be printed as they are.
    """
    workdir = paths.as_path(workdir)  # a local path or a URL (gs://...): one type from here on
    validate_config(config)
    model = build_model(config)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the work directory {workdir}: {e.strerror or e}") from None
    _, cache_note = compile_cache.enable(config.train.compilation_cache_dir, workdir)
    if jax.process_index() == 0:
        print(f"[iln_jax] {cache_note}", flush=True)
    quiet_orbax_errors()  # failures are reported once, as this project's errors
    grace = config.train.sigterm_grace_seconds
    with WorkdirLock(workdir) as lock, PreemptionGuard(grace_seconds=grace, on_abandon=lock.release) as guard, \
            storage.stop_on_refused_writes(workdir):
        return _train(Run.build(config, workdir, model), lock, guard, on_step)


def _train(run: Run, lock: WorkdirLock, guard: PreemptionGuard, on_step: Optional[OnStep]) -> dict:
    """Start-up, the steps, the summary; whatever was opened is closed on every way out."""
    t_start = time.time()
    c = run.config
    with _Closers() as closers:
        closers.add(run.checkpointer)
        try:
            start = startup.initial_state(run)
            progress = closers.add(Progress(c.train.num_steps, start.step,
                                            enabled=run.is_main and c.train.progress_bar))
            batches = closers.add(PhaseBatches(c, run.phases, run.parallel.shard_batch, phase=start.phase,
                                               stream=start.stream, done=start.step, announce=progress.write))
            params = _announce(run, start)
            writer = closers.add(MetricWriter(run.workdir, enabled=run.is_main, resume_step=start.step))
            clock = TrainClock()
            after_step = _hooks(run, start, writer, progress, clock, lock=lock, guard=guard, on_step=on_step)
            step_fn = CompiledStep(run.step_fn, run.parallel, clock, fast_compile=c.train.fast_compile)
            progress.start()
            with _note_on_ctrl_c(progress.write, batches, run.checkpointer.directory):
                state, step, status = train_steps(start.state, start.step, c.train.num_steps, batches=batches,
                                                  step_fn=step_fn, after_step=after_step,
                                                  stop=hooks.preempted_before_start(guard, progress.write))
                reports = after_step.finish(state, step, status)
        except TerminatedError:
            run.checkpointer.abandon()
            raise
        summary = summarize(run, params=params, start_step=start.step, final_step=step, status=status,
                            compile_seconds=step_fn.seconds, wall_seconds=time.time() - t_start,
                            train_seconds=clock.total, reports=reports)
        progress.close()  # the summary goes below the bar, not into its line
        if run.is_main:
            _write_text(run.workdir / "summary.json", summary_json(summary))
            print(format_summary(summary, c), flush=True)
        return summary


def train_steps(state: TrainState, start: int, num_steps: int, *, batches: PhaseBatches, step_fn: CompiledStep,
                after_step: hooks.Hooks, stop: Optional[str] = None) -> tuple[TrainState, int, Optional[str]]:
    """The algorithm: for each step after ``start``, its batch, one train step, then the hooks,
    any of which may end the run after that step. Returns the last state, its step and why the
    run ended early (None: it ran to ``num_steps``); ``stop`` ends it before the first step."""
    step = start
    while stop is None and step < num_steps:
        step += 1
        local_batch, batch = batches.next(step)  # already on the devices
        state, metrics = step_fn(state, batch, batches.phase)
        stop = after_step(Step(step, state, metrics, batch, local_batch, batches.phase, batches.stream,
                               last=step == num_steps))
    return state, step, stop


def _announce(run: Run, start: startup.Start) -> int:
    """Write ``config.json`` and print the start line (and the phases); the parameter count."""
    c = run.config
    if run.is_main:
        _write_text(run.workdir / "config.json", c.to_json_best_effort(indent=2) + "\n")
    params = param_count(start.state.params)
    run.say(f"[iln_jax] {c.name}: {c.model.arch} norm={c.model.norm} {params / 1e6:.3f}M params, "
            f"{c.train.parallel} over {run.parallel.num_devices} device(s) / {jax.process_count()} process(es), "
            f"global batch {start.phase.batch_size}, {start.origin}")
    if len(run.phases) > 1:
        run.say("[iln_jax] progressive patches: " + ", ".join(
            f"steps {p.first_step}-{p.last_step}: {p.gt_size} px x {p.batch_size}" for p in run.phases))
    return params


def _hooks(run: Run, start: startup.Start, writer: MetricWriter, progress: Progress, clock: TrainClock, *,
           lock: WorkdirLock, guard: PreemptionGuard, on_step: Optional[OnStep]) -> hooks.Hooks:
    """The run's hooks, in the order they are called after each step."""
    c = run.config
    pending = hooks.PendingMetrics(check=hooks.NonFiniteCheck(run.checkpointer))
    checkpoints = hooks.Checkpoints(run.checkpointer, run.parallel, run.config_dict, every=c.train.checkpoint_every,
                                    before_save=pending.fetch)
    found = [hooks.MetricLog(pending, writer, progress, clock, every=c.train.log_every,
                             progressive=len(run.phases) > 1),
             hooks.Diagnostics.for_run(c, run.model, run.workdir, mode=run.parallel.mode, start=start.step),
             checkpoints,
             _validation(run, start, writer, progress, before=pending.fetch),
             hooks.Callback(on_step) if on_step is not None else None,
             hooks.LockCheck(lock),
             hooks.Preemption(guard, checkpoints, progress.write)]
    return hooks.Hooks([h for h in found if h is not None], clock)


def _validation(run: Run, start: startup.Start, writer: MetricWriter, progress: Progress, *,
                before: Callable[[], None]) -> Optional[hooks.Validation]:
    """The validation hook (None with ``eval.every < 0``); logs the baseline's scores."""
    validator = hooks.make_validator(run.config, run.model, run.parallel, run.workdir, write=run.is_main)
    if validator is None:
        return None
    writer.write_scalars(start.step, {"baseline/psnr": validator.baseline["psnr"],
                                      "baseline/ssim": validator.baseline["ssim"]}, split="val")
    tags = hooks.weight_tags(run.config.eval.weights, has_ema=start.state.ema_params is not None)
    return hooks.Validation(validator, writer, run.parallel, every=run.config.eval.every, tags=tags, before=before,
                            say=progress.write if run.is_main else None)


@contextlib.contextmanager
def _note_on_ctrl_c(say: Callable[[str], None], batches: PhaseBatches, checkpoints: epath.Path) -> Iterator[None]:
    """Ctrl-C: say at which step, and what re-running does."""
    try:
        yield
    except KeyboardInterrupt:
        say(f"[iln_jax] interrupted (Ctrl-C) at step {batches.step}; re-run the same command to resume from "
            f"the newest complete checkpoint in {checkpoints}")
        raise


class _Closers:
    """What was opened, closed when the block ends: newest first, each even if another fails;
    the first failure is raised unless the block already ends with an error (it must not hide it)."""

    def __init__(self):
        self._closers: list[Callable[[], None]] = []

    def add(self, closable):
        """Close ``closable`` at the end; returns it."""
        self._closers.append(closable.close)
        return closable

    def __enter__(self) -> "_Closers":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        first = None
        for close in reversed(self._closers):
            try:
                close()
            except Exception as e:  # noqa: BLE001
                first = first or e
        if first is not None and exc_type is None:
            raise first
        return False


def _write_text(path: epath.Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror or e}; stopping") from None

"""Orbax checkpoints of (train state, data iterator, config): auto-resume that is exact or says
why not, saves whose failure stops the run, and nothing saved ever deleted by a failure.

One :class:`Checkpointer` per run directory. Each saved step holds three items, written
cooperatively by all processes: ``state`` (the replicated TrainState), ``data`` (grain iterator
state, one JSON file per process) and ``config`` (the run's config as JSON). Saves are
asynchronous: ``save`` returns once the arrays are copied off the devices and the files are
written in the background; a step directory only counts once Orbax has committed it, so a
process killed mid-save resumes from the previous complete checkpoint.

Failures and deletion:

* A save that fails in the background (full disk, quota, I/O error) is noticed by
  :meth:`Checkpointer.check`, which the loop calls after every step (it only looks at a flag
  until the save has finished), and at the latest by the next ``save`` or by ``close``; it
  raises :class:`StorageError` naming the step, the path and the reason.
* Old steps beyond ``max_to_keep`` are deleted by this class, not by Orbax, and only once a newer
  save is committed and complete: a failed save never costs a saved checkpoint.

Resuming (:meth:`Checkpointer.newest_complete_step`) walks the steps newest first and takes the
first one that passes ``checkpoint_integrity.problem``; the newer ones are reported, one line
each, and moved aside to ``<step>.corrupt-<UTC time>`` (never deleted) so that neither Orbax nor
a later run picks them up. With several processes, process 0 decides and tells the others.
"""
from __future__ import annotations

import datetime
import json
import logging
import warnings
from typing import Any, Optional, Sequence

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from iln_jax import paths
from iln_jax.errors import CheckpointError, CheckpointNotFoundError, StorageError
from iln_jax.train import checkpoint_integrity as integrity
from iln_jax.train.checkpoint_integrity import CONFIG, DATA, STATE, short_reason
from iln_jax.train.orbax_noise import quiet_orbax_errors
from iln_jax.train.storage import storage_reason

log = logging.getLogger(__name__)

ITEMS = (STATE, DATA, CONFIG)
CORRUPT_MARK = ".corrupt-"

# Orbax's "replica-parallel" save cuts each replicated array into one slice per replica (device),
# each an op dispatched and copied on its own. For small arrays (biases, norms, position tables:
# most of an IR transformer's leaves) that costs more than it saves: a tiny SwinIR on 8 CPU devices
# spent 3.5 of its 9 s saving five checkpoints, in 80 slice compilations. Arrays whose slices would
# be under this size are written whole by one replica; a checkpoint restores the same either way.
MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL = 1 << 20


def _use_whole_small_arrays() -> None:
    """Register Orbax's jax.Array handler with :data:`MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL`, its other
    settings as Orbax's default handler has them (process wide: Orbax keeps one registry; idempotent)."""
    current = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(current, "_min_slice_bytes_for_replica_parallel", None) == MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL:
        return
    handler = ocp.type_handlers.ArrayHandler(
        array_metadata_store=getattr(current, "_array_metadata_store", None),  # the default writes array metadata
        min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL)
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def _restorable(iterator) -> bool:
    return iterator is not None and hasattr(iterator, "get_state") and hasattr(iterator, "set_state")


def orbax_path(path: epath.Path) -> epath.Path:
    """The path handed to Orbax, as it is: a ``gs://`` URL reaches Orbax unchanged, which writes
    the metadata through epath and the arrays through TensorStore's own GCS driver. (Every call
    into Orbax goes through here; the offline test maps URLs to a local mirror at this point.)"""
    return path


class Checkpointer:
    def __init__(self, directory: paths.PathLike, *, max_to_keep: int, save_every: int,
                 async_save: bool = True):
        self.directory = paths.as_path(directory)
        self.max_to_keep = max_to_keep
        _use_whole_small_arrays()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,  # pruned here, after a newer save is known to be complete
            save_interval_steps=max(1, save_every), enable_async_checkpointing=async_save, create=True,
            cleanup_tmp_directories=True)  # half-written steps of killed runs
        self.manager = ocp.CheckpointManager(orbax_path(self.directory), options=options)
        self._in_flight: Optional[tuple[int, tuple[str, ...]]] = None
        self._last_saved: Optional[int] = None
        self._broken: list[tuple[int, str]] = []
        self._closed = False

    # -- saving ----------------------------------------------------------------------------------
    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iterator=None, config: Optional[dict] = None, *,
             force: bool = False) -> bool:
        """Save if ``step`` is on the interval (or ``force``); returns whether a save started.

        Waits for the previous save first and raises :class:`StorageError` if it failed. A step
        that was saved already (a SIGTERM right after an interval save) is not saved twice.
        """
        if step == self._last_saved or not (force or self.manager.should_save(step)):
            return False
        self._finish_in_flight()
        items = {STATE: ocp.args.StandardSave(state)}
        if _restorable(data_iterator):
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items[CONFIG] = ocp.args.JsonSave(config)
        try:
            started = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many types for one failure
            raise self._save_error(step, e) from None
        if started:
            self._in_flight = (step, tuple(items))
            self._last_saved = step
        return started

    def check(self) -> None:
        """Raise :class:`StorageError` if the last asynchronous save failed; never blocks on a
        save still in progress."""
        if self._in_flight is not None and not self.manager.is_saving_in_progress():
            self._finish_in_flight()

    def _finish_in_flight(self) -> None:
        if self._in_flight is None:
            return
        (step, items), self._in_flight = self._in_flight, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(step, e) from None
        step_dir = self.directory / str(step)
        found = "it was not committed" if not step_dir.is_dir() else integrity.problem(
            step_dir, items, process_count=jax.process_count())
        if found:
            raise self._save_error(step, found)
        self._prune()

    def _prune(self) -> None:
        steps = sorted(self.manager.all_steps())
        for step in steps[:max(0, len(steps) - self.max_to_keep)]:
            self.manager.delete(step)

    def _save_error(self, step: int, error: BaseException | str) -> StorageError:
        # The failed save leaves Orbax coroutines that are never awaited; Python would warn at exit.
        warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning)
        reason = error if isinstance(error, str) else storage_reason(error)
        saved = [s for s in _step_numbers(self.directory) if s != step]
        kept = (f"the saved checkpoints are kept (newest: step {max(saved)}); re-run the same command to "
                f"resume from there once the storage is fixed" if saved else "no checkpoint was saved before")
        return StorageError(f"checkpoint step {step} could not be saved to {self.directory / str(step)}: "
                            f"{reason}; stopping ({kept})")

    def wait(self) -> None:
        self._finish_in_flight()

    def close(self) -> None:
        """Finish (and check) the last save, then close the manager; once only (later calls
        and calls after :meth:`abandon` do nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._finish_in_flight()
        finally:
            self.manager.close()

    def abandon(self) -> None:
        """Stop using this checkpointer without waiting for a save in progress: the run is being
        terminated, and a save stuck in I/O must not hold the exit. The manager is left to the
        process's exit, since closing it would wait for that save; a save that never finishes
        is never committed, so the next run resumes from the newest complete step."""
        self._closed = True
        self._in_flight = None

    # -- resuming --------------------------------------------------------------------------------
    def newest_complete_step(self, items: Sequence[str] = ITEMS, *, read_arrays: bool = True) -> Optional[int]:
        """The newest step that is complete and readable (None: there is no step at all).

        Newer, broken steps are remembered for :meth:`set_aside_broken`. Raises
        :class:`CheckpointError` when steps exist but none is usable, naming each one, and
        changes nothing. Process 0 decides; with several processes the others receive its answer.
        """
        self._broken = []
        if jax.process_index() == 0:
            step, self._broken = self._scan(items, read_arrays)
            code = step if step is not None else (-2 if self._broken else -1)
        else:
            code = 0
        if jax.process_count() > 1:
            code = int(multihost_utils.broadcast_one_to_all(np.int64(code)))
        if code == -2:
            detail = "; ".join(f"step {s}: {why}" for s, why in self._broken) or "see the output of process 0"
            raise CheckpointError(
                f"no complete checkpoint in {self.directory} ({detail}). Nothing was changed; to start over, "
                f"move {self.directory} aside or use another --workdir")
        return None if code == -1 else code

    def set_aside_broken(self) -> None:
        """Report the broken steps newer than the one resumed (one line each) and move them aside."""
        for step, why in self._broken:
            target = self.set_aside(step, why)
            print(f"[iln_jax] checkpoint step {step} is unusable ({why}): moved to {target.name}; resuming "
                  f"from the newest complete checkpoint instead", flush=True)
        self._broken = []
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("iln_jax:checkpoints_set_aside")
        self.manager.reload()

    def _scan(self, items: Sequence[str], read_arrays: bool) -> tuple[Optional[int], list[tuple[int, str]]]:
        broken = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            found = integrity.problem(self.directory / str(step), items, process_count=jax.process_count(),
                                      read_arrays=read_arrays)
            if found is None:
                return step, broken
            broken.append((step, found))
        return None, broken

    def set_aside(self, step: int, reason: str) -> Optional[epath.Path]:
        """Move ``<step>`` to ``<step>.corrupt-<time>`` with a note saying why (process 0)."""
        if jax.process_index() != 0:
            return None
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.directory / f"{step}{CORRUPT_MARK}{stamp}"
        (self.directory / str(step)).rename(target)
        (target / "WHY_SET_ASIDE.txt").write_text(f"{reason}\n")
        return target

    def saved_config(self, step: int) -> Optional[dict]:
        """The config saved with ``step`` (None for checkpoints without one)."""
        return read_config(self.directory / str(step))

    def state_metadata(self, step: int):
        """The saved state's tree of array metadata (shapes, dtypes), without reading arrays."""
        return ocp.StandardCheckpointHandler().metadata(orbax_path(self.directory / str(step) / STATE))

    def restore(self, abstract_state: Any, data_iterator=None, step: Optional[int] = None) -> tuple[Any, int]:
        """Restore ``state`` (onto the shardings in ``abstract_state``) and the iterator in place.

        Raises :class:`CheckpointError` (one line) if Orbax cannot read the step.
        """
        step = self.latest_step() if step is None else step
        items = {STATE: ocp.args.StandardRestore(abstract_state)}
        if _restorable(data_iterator):
            items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint step {step} in {self.directory} cannot be restored: "
                                  f"{short_reason(e)}") from None
        return restored[STATE], step


def checkpoint_directory(directory: paths.PathLike) -> epath.Path:
    """A work directory's ``checkpoints/`` folder (or ``directory`` itself when it is that folder)."""
    directory = paths.as_path(directory)
    return directory / "checkpoints" if (directory / "checkpoints").is_dir() else directory


def _step_numbers(directory: epath.Path) -> list[int]:
    """Committed steps: directories named by a number (not ``*.orbax-checkpoint-tmp*``, not
    set aside)."""
    try:
        return [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
    except OSError:
        return []


def read_config(step_dir: epath.Path) -> Optional[dict]:
    """The config item of a step directory (None if it has none)."""
    path = step_dir / CONFIG / integrity.CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def _newest_usable(directory: epath.Path, items: Sequence[str]) -> Optional[int]:
    """Read-only: the newest step of ``directory`` whose ``items`` pass the cheap checks."""
    problems = []
    for step in sorted(_step_numbers(directory), reverse=True):
        found = integrity.problem(directory / str(step), items)
        if found is None:
            if problems:
                log.warning("skipping unusable checkpoint(s) in %s: %s", directory, "; ".join(problems))
            return step
        problems.append(f"step {step}: {found}")
    if problems:
        raise CheckpointError(f"no usable checkpoint in {directory} ({'; '.join(problems)})")
    return None


def load_config(directory: paths.PathLike, step: Optional[int] = None) -> Optional[dict]:
    """The run config saved with a checkpoint (the newest usable one by default), as a plain dict.

    Falls back to the run's ``config.json`` for checkpoints saved without one; None when neither
    exists.
    """
    directory = checkpoint_directory(directory)
    if directory.is_dir():
        step = _newest_usable(directory, (STATE,)) if step is None else step
        if step is not None:
            saved = read_config(directory / str(step))
            if saved is not None:
                return saved
    for path in (directory.parent / "config.json", directory / "config.json"):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def load_state(directory: paths.PathLike, step: Optional[int] = None) -> tuple[dict, int]:
    """The saved train state of a run as a host (numpy) tree, without building the model.

    ``directory`` is a work directory or its ``checkpoints/`` folder; ``step`` defaults to the
    newest usable one. Works for checkpoints written by any number of processes/devices.
    """
    quiet_orbax_errors()
    directory = checkpoint_directory(directory)
    if not directory.is_dir():
        raise CheckpointNotFoundError(f"no checkpoint directory {directory}")
    step = _newest_usable(directory, (STATE,)) if step is None else step
    if step is None:
        raise CheckpointNotFoundError(f"no checkpoint in {directory}")
    path = directory / str(step) / STATE
    if not path.is_dir():
        raise CheckpointNotFoundError(f"no checkpoint step {step} in {directory}")
    try:
        meta = ocp.StandardCheckpointHandler().metadata(orbax_path(path))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(orbax_path(path), target)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint step {step} in {directory} cannot be read: {short_reason(e)}") from None
    return jax.tree.map(np.asarray, restored), step

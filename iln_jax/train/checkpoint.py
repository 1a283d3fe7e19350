"""Orbax checkpoints of (train state, data iterator, config) with auto-resume and preemption.

One :class:`Checkpointer` per run directory. Each saved step holds three items, written
cooperatively by all processes: ``state`` (the replicated TrainState), ``data`` (grain iterator
state, one JSON file per process) and ``config`` (the run's config as JSON). Saves are
asynchronous: ``save`` returns once the arrays are copied off the devices and the files are
written in the background; a step directory only counts once Orbax has committed it, so a
process killed mid-save resumes from the previous complete checkpoint.

:class:`PreemptionGuard` turns SIGTERM (preemption on Cloud TPU / GCE / Slurm / Kubernetes)
into "save now and exit cleanly"; with several processes they agree on the step to stop at.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


def _restorable(iterator) -> bool:
    return iterator is not None and hasattr(iterator, "get_state") and hasattr(iterator, "set_state")


class Checkpointer:
    def __init__(self, directory: str | Path, *, max_to_keep: int, save_every: int,
                 async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=max(1, save_every),
            enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iterator=None, config: Optional[dict] = None, *,
             force: bool = False) -> bool:
        """Save if ``step`` is on the interval (or ``force``); returns whether a save started."""
        items = {"state": ocp.args.StandardSave(state)}
        if _restorable(data_iterator):
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items["config"] = ocp.args.JsonSave(config)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: Any, data_iterator=None, step: Optional[int] = None) -> tuple[Any, int]:
        """Restore ``state`` (onto the shardings in ``abstract_state``) and the iterator in place."""
        step = self.latest_step() if step is None else step
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if _restorable(data_iterator) and (self.directory / str(step) / "data").is_dir():
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], step

    def saved_config(self, step: Optional[int] = None) -> Optional[dict]:
        """The config saved with a checkpoint (None for checkpoints without one)."""
        step = self.latest_step() if step is None else step
        if step is None or not (self.directory / str(step) / "config").is_dir():
            return None
        return load_config(self.directory, step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class PreemptionGuard:
    """Context manager: SIGTERM sets a flag instead of killing the process.

    ``reached(step)`` is True once the run should checkpoint and stop: right after a SIGTERM with
    one process; with several, at the next multiple of ``sync_every`` after any process got one
    (they agree through an all-gather, so all of them save the same step).
    """

    def __init__(self, sync_every: int = 10):
        self.sync_every = sync_every
        self._event = threading.Event()
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False

    def _handle(self, signum, frame):  # noqa: ARG002
        log.warning("SIGTERM received: checkpointing after the current step, then exiting")
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def reached(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.requested
        # Every process must stop at the same step: agree with a (tiny) collective, every
        # ``sync_every`` steps so that it costs nothing measurable.
        if step % self.sync_every:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.asarray(self.requested))))


def checkpoint_directory(directory: str | Path) -> Path:
    """A work directory's ``checkpoints/`` folder (or ``directory`` itself when it is that folder)."""
    directory = Path(directory).absolute()
    return directory / "checkpoints" if (directory / "checkpoints").is_dir() else directory


def load_config(directory: str | Path, step: Optional[int] = None) -> Optional[dict]:
    """The run config saved with a checkpoint (the latest by default), as a plain dict.

    Falls back to the run's ``config.json`` for checkpoints saved without one; None when neither
    exists.
    """
    directory = checkpoint_directory(directory)
    if directory.is_dir():
        # Only the config's handler: asking for every item's metadata makes Orbax warn about the others.
        with ocp.CheckpointManager(directory, item_handlers={"config": ocp.JsonCheckpointHandler()}) as manager:
            step = manager.latest_step() if step is None else step
            if step is not None and (directory / str(step) / "config").is_dir():
                return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    for path in (directory.parent / "config.json", directory / "config.json"):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def load_state(directory: str | Path, step: Optional[int] = None) -> tuple[dict, int]:
    """The saved train state of a run as a host (numpy) tree, without building the model.

    ``directory`` is a work directory or its ``checkpoints/`` folder; ``step`` defaults to the
    latest. Works for checkpoints written by any number of processes/devices.
    """
    directory = checkpoint_directory(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"No checkpoint directory {directory}")
    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {directory}")
    path = directory / str(step) / "state"
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(path).item_metadata
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
        restored = ckptr.restore(path, target)
    return jax.tree.map(np.asarray, restored), step

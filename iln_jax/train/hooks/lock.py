"""The work directory's lock (``workdir_lock.py``): a run that lost it stops at the next step."""
from __future__ import annotations

from iln_jax.train.hooks.base import Hook, Step
from iln_jax.train.workdir_lock import WorkdirLock


class LockCheck(Hook):
    """Raises :class:`~iln_jax.errors.WorkdirBusyError` once the lock's heartbeat found it taken
    over or deleted (a flag check)."""

    def __init__(self, lock: WorkdirLock):
        self.lock = lock

    def __call__(self, step: Step) -> None:
        self.lock.check()

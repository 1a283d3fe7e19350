"""SIGTERM (preemption on Cloud TPU / GCE / Slurm / Kubernetes) as "save now and exit cleanly".

:class:`PreemptionGuard` replaces the SIGTERM handler for the duration of a run:

* the first SIGTERM sets a flag; the loop checkpoints after the current step and returns
  (with several processes they agree on the step to stop at every ``sync_every`` steps through
  JAX's coordination service, host to host: nothing is queued behind the devices' work, so the
  check does not drain the device queue as a device all-gather would);
* if the loop has not finished that within ``grace_seconds`` (it is blocked: a hung file
  system, a stuck writer), the guard interrupts the main thread with :class:`TerminatedError`,
  whatever call it is blocked in, and the run stops without saving (losing at most the steps
  since the newest complete checkpoint);
* a second SIGTERM does the same at once.

SIGINT (Ctrl-C) keeps Python's behaviour, a ``KeyboardInterrupt`` in the main thread, which
also interrupts blocking waits. Both paths leave through the run's ``finally`` blocks, which
release the work directory's lock.
"""
from __future__ import annotations

import itertools
import logging
import signal
import threading
from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from iln_jax.errors import TerminatedError

log = logging.getLogger(__name__)

_RUNS = itertools.count()
_VOTE_TIMEOUT_MS = 30 * 60 * 1000  # hosts are at most a few steps apart; this only stops a dead peer


def _coordination_client():
    """JAX's distributed-runtime client (None when jax.distributed is not initialised)."""
    try:
        from jax._src import distributed
    except ImportError:
        return None
    return getattr(distributed.global_state, "client", None)


class PreemptionGuard:
    """Context manager: SIGTERM sets a flag instead of killing the process.

    ``reached(step)`` is True once the run should checkpoint and stop: right after a SIGTERM with
    one process; with several, at the next multiple of ``sync_every`` after any process got one
    (they agree through an all-gather, so all of them save the same step).
    """

    def __init__(self, sync_every: int = 10, grace_seconds: float = 60.0):
        self.sync_every = sync_every
        self.grace_seconds = grace_seconds
        self._event = threading.Event()
        self._previous = None
        self._installed = False
        self._timer: Optional[threading.Timer] = None
        self._overdue = False
        # Runs of one process are numbered alike on every process (each calls train_and_evaluate
        # in the same order), so that the votes of two runs never mix.
        self._run = next(_RUNS)
        self._previous_round: Optional[int] = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._timer is not None:
            self._timer.cancel()
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
        return False

    def _handle(self, signum, frame):  # noqa: ARG002
        if self._event.is_set():
            why = (f"SIGTERM: the run could not checkpoint and stop within {self.grace_seconds:g} s "
                   f"(train.sigterm_grace_seconds)" if self._overdue else "a second SIGTERM")
            raise TerminatedError(f"{why}; stopped without saving the current step. Re-run the same command "
                                  f"to resume from the newest complete checkpoint")
        log.warning("SIGTERM received: checkpointing after the current step, then exiting")
        self._event.set()
        if self.grace_seconds > 0:
            self._timer = threading.Timer(self.grace_seconds, self._interrupt_main)
            self._timer.daemon = True
            self._timer.start()

    def _interrupt_main(self) -> None:
        if not self._installed:  # the run ended meanwhile; SIGTERM would now kill the process
            return
        self._overdue = True
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def reached(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.requested
        # Every process must stop at the same step: they agree every ``sync_every`` steps.
        if step % self.sync_every:
            return False
        client = _coordination_client()
        if client is None:  # no coordination service: a device all-gather (waits for the queue)
            return bool(np.any(multihost_utils.process_allgather(np.asarray(self.requested))))
        return self._agree(client, step)

    def _agree(self, client, step: int) -> bool:
        """Whether any process got SIGTERM, through the coordination service's key-value store."""
        me, n = jax.process_index(), jax.process_count()
        prefix = f"iln_jax/preemption/{self._run}/"
        client.key_value_set(f"{prefix}{step}/{me}", "1" if self.requested else "0")
        votes = [client.blocking_key_value_get(f"{prefix}{step}/{i}", _VOTE_TIMEOUT_MS) for i in range(n)]
        # Every process has read the votes of the round before this one: drop this process's.
        if self._previous_round is not None:
            client.key_value_delete(f"{prefix}{self._previous_round}/{me}")
        self._previous_round = step
        return "1" in votes

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
* if even that has not ended the process ``abandon_seconds`` later (the main thread never gets
  back to the interpreter, e.g. it is stuck in a system call that retries after a signal, or in
  the clean-up itself), the guard prints the same one-line error, releases what ``on_abandon``
  releases (the work directory's lock) and exits the process with status 143;
* a second SIGTERM raises :class:`TerminatedError` at once.

The grace clock does not depend on the main thread: Python runs a signal handler only when the
main thread reaches the interpreter, so the guard also sees SIGTERM at the C level, through
``signal.set_wakeup_fd`` and a thread of its own, and starts the clock from there.

SIGINT (Ctrl-C) keeps Python's behaviour, a ``KeyboardInterrupt`` in the main thread, which
also interrupts blocking waits. Both paths leave through the run's ``finally`` blocks, which
release the work directory's lock.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
from typing import Callable, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from iln_jax.errors import TerminatedError

log = logging.getLogger(__name__)

_RUNS = itertools.count()
_VOTE_TIMEOUT_MS = 30 * 60 * 1000  # hosts are at most a few steps apart; this only stops a dead peer
ABANDON_SECONDS = 10.0  # after the interrupt, for the clean-up (closers, lock release) to finish
_ON_ABANDON_SECONDS = 5.0  # on_abandon may touch the storage that hangs: do not wait longer for it


def _coordination_client():
    """JAX's distributed-runtime client (None when jax.distributed is not initialised)."""
    try:
        from jax._src import distributed
    except ImportError:
        return None
    return getattr(distributed.global_state, "client", None)


_STOPPED = ("stopped without saving the current step. Re-run the same command to resume from the newest "
            "complete checkpoint")


def _daemon_timer(seconds: float, function: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, function)
    timer.daemon = True
    timer.start()
    return timer


def _quietly(function: Callable[[], None]) -> None:
    try:
        function()
    except Exception as e:  # noqa: BLE001  (the process is exiting; say why the release failed)
        log.warning("while exiting after SIGTERM: %s", e)


class PreemptionGuard:
    """Context manager: SIGTERM sets a flag instead of killing the process.

    ``reached(step)`` is True once the run should checkpoint and stop: right after a SIGTERM with
    one process; with several, at the next multiple of ``sync_every`` after any process got one
    (they agree through an all-gather, so all of them save the same step).
    """

    def __init__(self, sync_every: int = 10, grace_seconds: float = 60.0, *,
                 abandon_seconds: float = ABANDON_SECONDS, on_abandon: Optional[Callable[[], None]] = None):
        self.sync_every = sync_every
        self.grace_seconds = grace_seconds
        self.abandon_seconds = abandon_seconds
        self.on_abandon = on_abandon
        self._event = threading.Event()
        self._previous = None
        self._installed = False
        self._clock = threading.Lock()
        self._timer: Optional[threading.Timer] = None
        self._abandon_timer: Optional[threading.Timer] = None
        self._overdue = False
        self._wakeup: Optional[socket.socket] = None  # the write end; the watching thread owns the read end
        self._previous_wakeup = -1
        # Runs of one process are numbered alike on every process (each calls train_and_evaluate
        # in the same order), so that the votes of two runs never mix.
        self._run = next(_RUNS)
        self._previous_round: Optional[int] = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
            self._watch_signals()
        return self

    def __exit__(self, *exc):
        self._installed = False  # first: a timer firing now does nothing
        for timer in (self._timer, self._abandon_timer):
            if timer is not None:
                timer.cancel()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            self._wakeup.close()  # the watching thread reads end-of-file and ends
            self._wakeup = None
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        return False

    # -- seeing the signal -----------------------------------------------------------------------
    def _watch_signals(self) -> None:
        """Start the thread that sees SIGTERM when the C-level handler does (set_wakeup_fd)."""
        read, write = socket.socketpair()
        write.setblocking(False)  # the C handler must never block
        try:
            self._previous_wakeup = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
        except ValueError:  # no wake-up fd here (not the main interpreter): the handler alone starts the clock
            read.close()
            write.close()
            return
        self._wakeup = write
        threading.Thread(target=self._watch, args=(read, self._previous_wakeup), name="sigterm_watch",
                         daemon=True).start()

    def _watch(self, read: socket.socket, forward_to: int) -> None:
        with read:
            while True:
                try:
                    signums = read.recv(64)
                except OSError:
                    return
                if not signums:  # __exit__ closed the other end
                    return
                if forward_to >= 0:  # whoever had the wake-up fd before still gets its bytes
                    try:
                        os.write(forward_to, signums)
                    except OSError:
                        pass
                if signal.SIGTERM in signums:
                    self._start_clock()

    def _handle(self, signum, frame):  # noqa: ARG002
        if self._overdue or self._event.is_set():
            why = (f"SIGTERM: the run could not checkpoint and stop within {self.grace_seconds:g} s "
                   f"(train.sigterm_grace_seconds)" if self._overdue else "a second SIGTERM")
            raise TerminatedError(f"{why}; {_STOPPED}")
        log.warning("SIGTERM received: checkpointing after the current step, then exiting")
        self._event.set()
        self._start_clock()

    # -- the grace clock ---------------------------------------------------------------------------
    def _start_clock(self) -> None:
        if self.grace_seconds <= 0 or not self._clock.acquire(blocking=False):
            return  # no time limit, or the clock is being started right now (by the other path)
        try:
            if self._timer is None:
                self._timer = _daemon_timer(self.grace_seconds, self._interrupt_main)
        finally:
            self._clock.release()

    def _interrupt_main(self) -> None:
        if not self._installed:  # the run ended meanwhile; SIGTERM would now kill the process
            return
        self._overdue = True
        self._abandon_timer = _daemon_timer(self.abandon_seconds, self._abandon)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    def _abandon(self) -> None:
        """The interrupted run did not end: release what on_abandon releases, say so, exit."""
        if not self._installed:
            return
        if self.on_abandon is not None:
            releasing = threading.Thread(target=_quietly, args=(self.on_abandon,), daemon=True)
            releasing.start()
            releasing.join(_ON_ABANDON_SECONDS)
        message = (f"[iln_jax] error: SIGTERM: the run could not checkpoint and stop within {self.grace_seconds:g} s "
                   f"(train.sigterm_grace_seconds), nor end {self.abandon_seconds:g} s after being interrupted; "
                   f"exiting; {_STOPPED}\n")
        try:
            os.write(2, message.encode())  # not sys.stderr: its lock may be held by the stuck thread
        except OSError:
            pass
        os._exit(TerminatedError.exit_code)

    # -- the decision --------------------------------------------------------------------------------
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

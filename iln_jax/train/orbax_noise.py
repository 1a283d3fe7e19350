"""Orbax's failure noise, silenced: this project reports each failed save or restore once, as
a :class:`~iln_jax.errors.StorageError` or :class:`~iln_jax.errors.CheckpointError`.

A single failed asynchronous save makes Orbax log several tracebacks from its background threads,
asyncio log "Task exception was never retrieved", and TensorStore's completion callbacks report
``RuntimeError('Event loop is closed')`` as unraisable, some of it after the run has already
reported the failure and is exiting. :func:`quiet_orbax_errors` drops exactly these, for the rest
of the process, unless the user asked for details (``ILN_JAX_TRACEBACK=1``, or absl verbosity at
INFO or below).
"""
from __future__ import annotations

import logging
import os
import sys
import traceback

from iln_jax.errors import traceback_requested


class _QuietOrbaxErrors(logging.Filter):
    """Drops Orbax's own error logs (tracebacks from its background threads, several per failed
    save) and asyncio's "exception never retrieved" for the same failures: the run reports each
    failure once, as a :class:`StorageError` or :class:`CheckpointError`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "/orbax/" in record.pathname.replace(os.sep, "/"):
            return record.levelno >= logging.CRITICAL
        if record.name == "asyncio" and record.exc_info and record.exc_info[2] is not None:
            frames = traceback.extract_tb(record.exc_info[2])
            return not any("/orbax/" in f.filename.replace(os.sep, "/") for f in frames)
        return True


def _is_closed_loop_callback(unraisable) -> bool:
    """TensorStore's completion callbacks of a failed save or restore land after Orbax closed its
    event loop; each then reports ``RuntimeError('Event loop is closed')`` as unraisable."""
    if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
    return any(f.name == "call_soon_threadsafe" for f in frames)


def _install_unraisable_filter() -> None:
    previous = sys.unraisablehook
    if getattr(previous, "_iln_jax_filter", False):
        return

    def hook(unraisable):
        if not _is_closed_loop_callback(unraisable):
            previous(unraisable)
    hook._iln_jax_filter = True
    sys.unraisablehook = hook


def quiet_orbax_errors() -> None:
    """Install the filters (idempotent; see the module docstring)."""
    absl_logger = logging.getLogger("absl")
    if traceback_requested() or absl_logger.getEffectiveLevel() <= logging.INFO:
        return
    _install_unraisable_filter()
    for logger in (absl_logger, logging.getLogger("asyncio")):
        if not any(isinstance(f, _QuietOrbaxErrors) for f in logger.filters):
            logger.addFilter(_QuietOrbaxErrors())

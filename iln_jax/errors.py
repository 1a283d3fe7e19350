"""The project's error classes: each message is complete (what, where, what to do), so the
command-line tools print it as is, without a traceback.

Every class also derives from the built-in exception that code written before it caught
(``ValueError``, ``FileNotFoundError``, ...), so those ``except`` clauses keep working.

``train.py`` and ``eval.py`` run their ``main`` through :func:`run_main`: an :class:`IlnJaxError`
becomes one line ``[train] error: <message>`` on stderr and exit status 1 (2 for usage errors);
``ILN_JAX_TRACEBACK=1`` in the environment (or train.py's ``--verbosity=1``) re-raises it with
its traceback instead.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

TRACEBACK_ENV = "ILN_JAX_TRACEBACK"


class IlnJaxError(Exception):
    """Base class: the message says everything a user needs; print it, not a traceback."""

    exit_code = 1


class ConfigError(IlnJaxError, ValueError):
    """A config key or value (or a model constructor argument) that cannot be used."""

    exit_code = 2


class DataError(IlnJaxError, ValueError):
    """Training or evaluation data that cannot be used (a folder layout, an unpaired file, ...)."""


class DataNotFoundError(IlnJaxError, FileNotFoundError):
    """A data folder or file that does not exist."""


class CheckpointError(IlnJaxError, ValueError):
    """A checkpoint (Orbax training run or PyTorch ``.pth``) that is missing, damaged or does not fit."""


class CheckpointNotFoundError(IlnJaxError, FileNotFoundError):
    """No checkpoint where one was asked for."""


class ResumeConfigError(CheckpointError):
    """Resuming a work directory with a config that changes the model the checkpoints hold."""


class StorageError(IlnJaxError, OSError):
    """Writing the run's files failed (disk full, quota, read-only, a failed checkpoint save)."""


class WorkdirBusyError(IlnJaxError):
    """Another run holds the work directory's lock (or took it over from this run)."""


class TerminatedError(IlnJaxError):
    """A second SIGTERM, or a first one the run could not honour within its grace period."""

    exit_code = 143


def traceback_requested() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").lower() not in ("", "0", "false", "no")


def one_line(text: str, limit: int = 400) -> str:
    """The first line of ``text``, shortened to ``limit`` characters (for wrapped library errors)."""
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def exit_with_error(prog: str, error: BaseException, code: int = 1) -> NoReturn:
    """Print ``[prog] error: message`` to stderr and exit with ``code``."""
    print(f"[{prog}] error: {error}", file=sys.stderr, flush=True)
    sys.exit(code)


def run_main(prog: str, main: Callable[[], int | None], *, show_traceback: bool = False) -> int | None:
    """Call ``main()``; the project's errors and Ctrl-C become one line on stderr and an exit status."""
    show_traceback = show_traceback or traceback_requested()
    try:
        return main()
    except IlnJaxError as e:
        if show_traceback:
            raise
        if isinstance(e, TerminatedError):
            # Background threads may be stuck in the I/O that made the run unstoppable: exit
            # without waiting for them (the work directory's lock was released already).
            print(f"[{prog}] error: {e}", file=sys.stderr, flush=True)
            os._exit(e.exit_code)
        exit_with_error(prog, e, e.exit_code)
    except KeyboardInterrupt:
        if show_traceback:
            raise
        print(f"[{prog}] interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        sys.exit(130)

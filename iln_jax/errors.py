"""The project's error classes: each message is complete (what, where, what to do), so the
command-line tools print it as is, without a traceback.

Every class also derives from the built-in exception that code written before it caught
(``ValueError``, ``FileNotFoundError``, ...), so those ``except`` clauses keep working.

Every command (``train.py``, ``eval.py``, ``python -m iln_jax.{analysis,compare,export,pretrained,
experiments.grid}``) runs its ``main`` through :func:`run_main` (:func:`run_cli` also exits with its
status). Expected failures become one line ``[prog] error: <message>`` on stderr and an exit status
(1; 2 for usage errors): the project's errors, a missing optional package (named with the
requirements file that installs it, ``iln_jax.dependencies``) and a file-system error on a named
path. ``ILN_JAX_TRACEBACK=1`` in the environment (or train.py's ``--verbosity=1``) re-raises them
with their traceback instead.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, NoReturn, Optional

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


class MissingDependencyError(IlnJaxError, ImportError):
    """An optional package is not installed: the message names the requirements file to install."""


class TerminatedError(IlnJaxError):
    """A second SIGTERM, or a first one the run could not honour within its grace period."""

    exit_code = 143


def traceback_requested() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").lower() not in ("", "0", "false", "no")


def one_line(text: str, limit: int = 400) -> str:
    """The first line of ``text``, shortened to ``limit`` characters (for wrapped library errors)."""
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def exit_with_error(prog: str, error: BaseException | str, code: int = 1) -> NoReturn:
    """Print ``[prog] error: message`` to stderr and exit with ``code``."""
    print(f"[{prog}] error: {error}", file=sys.stderr, flush=True)
    sys.exit(code)


def _with_hint(error: IlnJaxError, hints: Mapping[type, str]) -> str:
    """The message, with the command's advice for this kind of error (e.g. the flag that skips bad images)."""
    text = str(error)
    for kind, hint in hints.items():
        if isinstance(error, kind) and hint not in text:
            return f"{text} ({hint})"
    return text


def _file_system_error(error: OSError) -> str:
    what = error.strerror or type(error).__name__
    where = f"{error.filename} -> {error.filename2}" if error.filename2 is not None else str(error.filename)
    return f"{where}: {what}"


# Import name (or prefix) -> (pip name, requirements file, what needs it).
OPTIONAL = {
    "torch": ("torch", "requirements-dev.txt", "reading and writing PyTorch .pth files"),
    "gcsfs": ("gcsfs", "requirements-cloud.txt", "gs:// paths"),
    "google.cloud": ("google-cloud-storage", "requirements-cloud.txt", "checkpoints and the work-directory lock on gs://"),
    "google.api_core": ("google-cloud-storage", "requirements-cloud.txt", "checkpoints and the work-directory lock on gs://"),
}


def optional_entry(module: str) -> Optional[tuple[str, str, str]]:
    for prefix, entry in OPTIONAL.items():
        if module == prefix or module.startswith(prefix + "."):
            return entry
    return None


def missing_dependency_message(module: str, needed_for: Optional[str] = None) -> str:
    """``"<what> needs <pip name>, which is not installed: pip install -r <file>"``."""
    pip_name, requirements, purpose = optional_entry(module) or (module, "requirements.txt", "this")
    return f"{needed_for or purpose} needs {pip_name}, which is not installed: pip install -r {requirements}"


def missing_package(error: BaseException, needed_for: Optional[str] = None) -> Optional[MissingDependencyError]:
    """The one-line error for an ImportError (or one it was raised from) of an optional package;
    None when the import that failed is not one of them."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        name = getattr(error, "name", None) if isinstance(error, ImportError) else None
        if name and optional_entry(name):
            return MissingDependencyError(missing_dependency_message(name, needed_for))
        error = error.__cause__ or error.__context__
    return None


def run_main(prog: str, main: Callable[[], Any], *, show_traceback: bool = False,
             hints: Mapping[type, str] | None = None) -> Any:
    """Call ``main()``; expected failures and Ctrl-C become one line on stderr and an exit status.

    ``hints`` maps error classes to advice appended to their message (``{BadImageError: "--on-bad-image
    skip leaves such images out"}``)."""
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
        exit_with_error(prog, _with_hint(e, hints or {}), e.exit_code)
    except ImportError as e:
        missing = missing_package(e)
        if missing is None or show_traceback:
            raise
        exit_with_error(prog, missing, missing.exit_code)
    except OSError as e:  # the file system refused a named path (permissions, a full disk, ...)
        if e.filename is None or show_traceback:
            raise
        exit_with_error(prog, _file_system_error(e))
    except KeyboardInterrupt:
        if show_traceback:
            raise
        print(f"[{prog}] interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        sys.exit(130)


def run_cli(prog: str, main: Callable[[Any], Any], argv=None, *, hints: Mapping[type, str] | None = None) -> NoReturn:
    """A command's ``if __name__ == "__main__"``: :func:`run_main` on ``main(argv)``, then exit with
    the status ``main`` returned (an int), else 0."""
    result = run_main(prog, lambda: main(argv), hints=hints)
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)

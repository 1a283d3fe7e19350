"""The optional packages: what needs each, and the requirements file that installs it.

``requirements.txt`` holds everything the project needs to train, evaluate and export on local
paths. Two kinds of work need more: PyTorch (reading and writing ``.pth`` files, the parity
tools; ``requirements-dev.txt`` pins the CPU build) and the Google Cloud Storage clients
(``gs://`` paths; ``requirements-cloud.txt``). Code that needs one calls :func:`require`; an
import of one that fails anywhere else is recognised by :func:`missing_package`, so either way
the user reads one line naming the file to install.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from iln_jax.errors import MissingDependencyError, one_line

# Import name (or prefix) -> (pip name, requirements file, what needs it).
OPTIONAL = {
    "torch": ("torch", "requirements-dev.txt", "reading and writing PyTorch .pth files"),
    "gcsfs": ("gcsfs", "requirements-cloud.txt", "gs:// paths"),
    "google.cloud": ("google-cloud-storage", "requirements-cloud.txt", "checkpoints and the work-directory lock on gs://"),
    "google.api_core": ("google-cloud-storage", "requirements-cloud.txt", "checkpoints and the work-directory lock on gs://"),
}


def _entry(module: str) -> Optional[tuple[str, str, str]]:
    for prefix, entry in OPTIONAL.items():
        if module == prefix or module.startswith(prefix + "."):
            return entry
    return None


def message(module: str, needed_for: Optional[str] = None) -> str:
    """``"<what> needs <pip name>, which is not installed: pip install -r <file>"``."""
    pip_name, requirements, purpose = _entry(module) or (module, "requirements.txt", "this")
    return f"{needed_for or purpose} needs {pip_name}, which is not installed: pip install -r {requirements}"


def require(module: str, needed_for: Optional[str] = None) -> ModuleType:
    """Import an optional package, or raise :class:`MissingDependencyError` naming its requirements file."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise MissingDependencyError(message(module, needed_for)) from e
    except ImportError as e:  # installed but broken (e.g. a mismatched binary wheel)
        pip_name, requirements, _ = _entry(module) or (module, "requirements.txt", "")
        raise MissingDependencyError(f"{module} is installed but cannot be imported ({one_line(e, 200)}); "
                                     f"reinstall it: pip install --force-reinstall -r {requirements}") from e


def missing_package(error: BaseException, needed_for: Optional[str] = None) -> Optional[MissingDependencyError]:
    """The one-line error for an ImportError (or one it was raised from) of an optional package;
    None when the import that failed is not one of them."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        name = getattr(error, "name", None) if isinstance(error, ImportError) else None
        if name and _entry(name):
            return MissingDependencyError(message(name, needed_for))
        error = error.__cause__ or error.__context__
    return None

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

# the table of optional packages and their messages live with the error classes (run_main uses them)
from iln_jax.errors import (OPTIONAL, MissingDependencyError, missing_dependency_message,  # noqa: F401
                            missing_package, one_line, optional_entry)


def require(module: str, needed_for: Optional[str] = None) -> ModuleType:
    """Import an optional package, or raise :class:`MissingDependencyError` naming its requirements file."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise MissingDependencyError(missing_dependency_message(module, needed_for)) from e
    except ImportError as e:  # installed but broken (e.g. a mismatched binary wheel)
        pip_name, requirements, _ = optional_entry(module) or (module, "requirements.txt", "")
        raise MissingDependencyError(f"{module} is installed but cannot be imported ({one_line(e, 200)}); "
                                     f"reinstall it: pip install --force-reinstall -r {requirements}") from e

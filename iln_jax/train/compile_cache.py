"""JAX's persistent compilation cache, on by default, so that a restarted run does not recompile.

``train.compilation_cache_dir`` (config key) chooses the directory:

* ``"auto"`` (default): ``<workdir>/compile_cache``. The work directory is the one place every
  host of a pod shares (JAX writes entries on process 0 only and the other processes read them),
  it is there again after a preemption, and it goes away with the run. A local path or a URL
  (``gs://``; JAX reads and writes it through etils.epath) alike.
* a path or URL: that directory, e.g. ``~/.cache/iln_jax/xla`` to share entries between runs of
  one machine. Key a shared CPU cache per machine type: entries compiled for other CPU features
  are rejected and recompiled.
* ``""`` / ``"off"``: no cache.

An explicit JAX setting wins: with ``JAX_COMPILATION_CACHE_DIR`` in the environment (or
``jax_compilation_cache_dir`` set earlier in the process) that directory is kept, since JAX
initialises its cache once per process and ignores later changes. Entries are written only for
programs that took at least ``jax_persistent_cache_min_compile_time_secs`` (JAX's default 1 s) to
compile: the train step and the validation executables, not the many tiny helper jits.

Anyone who can write to the cache directory can run code in the job (JAX's warning); the work
directory is as trusted as the checkpoints it holds.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import jax
from etils import epath

from iln_jax import paths

log = logging.getLogger(__name__)

OFF = ("", "off", "none")


def resolve(setting: Optional[str], workdir: epath.Path) -> Optional[str]:
    """The directory ``setting`` means for ``workdir`` (None: off)."""
    setting = "auto" if setting is None else str(setting).strip()
    if setting.lower() in OFF:
        return None
    if setting == "auto":
        return os.fspath(workdir / "compile_cache")
    return setting if paths.is_url(setting) else os.path.abspath(os.path.expanduser(setting))


def enable(setting: Optional[str], workdir: epath.Path) -> tuple[Optional[str], str]:
    """Turn the cache on as ``setting`` says; ``(directory in use or None, one line saying why)``."""
    global _chosen
    current = jax.config.jax_compilation_cache_dir
    directory = resolve(setting, workdir)
    if current and current != _chosen:
        return current, f"compilation cache {current} (JAX's own jax_compilation_cache_dir wins)"
    if current:  # an earlier run of this process chose it; JAX keeps its first directory
        return current, f"compilation cache {current} (chosen by this process's first run)"
    if directory is None:
        return None, "compilation cache off (train.compilation_cache_dir)"
    if not paths.is_url(directory):
        os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    _chosen = directory
    return directory, f"compilation cache {directory}"


_chosen: Optional[str] = None

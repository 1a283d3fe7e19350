"""Keep XLA:CPU's per-execution scratch memory mapped from one step to the next.

XLA:CPU allocates each execution's temporary buffer with ``malloc`` and frees it when the execution
ends. For a full-size train step that buffer is GiBs, and glibc serves and returns blocks that
large with ``mmap``/``munmap``: every step faults the whole buffer in again, page by page, a large
share of the step's wall time on a small CPU (PyTorch's step reuses its freed memory and faults
almost nothing). Numbers: docs/design_measurements.md.

:func:`reuse_freed_memory` sets glibc's allocator so that freed blocks stay in the process: one
arena (a thread's own arena can only hand out blocks larger than 64 MiB with ``mmap``), no ``mmap``
for large blocks, no trimming of the heap. The next step's buffer is then the previous one, already
mapped. The price: the process keeps its peak host memory until it exits, and small allocations
that split a freed scratch block can make it map a second one (peak RSS up by more than half);
``system`` is the way out where RAM is tighter than time.

It must run before JAX starts its backends (its thread pools attach to allocator arenas when they
start), so the entry points (``train.py``, ``eval.py``, ``bench/``) call :func:`configure` first.
``ILN_JAX_HOST_MALLOC`` chooses: ``auto`` (default: only where XLA will run on the CPU and the C
library is glibc), ``reuse`` (always, glibc only), ``system`` (leave the allocator alone).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os
import platform

from iln_jax.errors import ConfigError

log = logging.getLogger(__name__)

ENV = "ILN_JAX_HOST_MALLOC"
POLICIES = ("auto", "reuse", "system")

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# Installed PJRT plugins that make an accelerator JAX's default backend.
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin",
                        "libtpu", "jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13")

_applied = False


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _module_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def runs_on_cpu() -> bool:
    """Whether JAX's default backend will be the CPU, decided without starting any backend."""
    platforms = os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_PLATFORM_NAME") or ""
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not any(_module_installed(name) for name in _ACCELERATOR_PLUGINS)


def backends_started() -> bool:
    # Imported on use: this module is set up before JAX (train.py, conftest), and this is JAX's private API.
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()


def reuse_freed_memory() -> bool:
    """Set glibc's allocator to keep freed memory (see the module docstring). False where not glibc."""
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    if backends_started():
        log.warning("%s: JAX's backends are already running; freed scratch memory is kept only for "
                    "threads started from now on (call iln_jax.host_memory.configure() first)", ENV)
    # -1 as size_t: never trim the top of the heap.
    ok = all(libc.mallopt(param, value) == 1 for param, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
    _applied = ok
    return ok


def configure(policy: str | None = None) -> bool:
    """Apply ``policy`` (default: ``$ILN_JAX_HOST_MALLOC`` or ``auto``); returns whether memory is reused."""
    policy = (policy or os.environ.get(ENV) or "auto").strip().lower()
    if policy not in POLICIES:
        raise ConfigError(f"{ENV}={policy!r}: expected one of {', '.join(POLICIES)}")
    if policy == "system" or (policy == "auto" and not runs_on_cpu()):
        return False
    return reuse_freed_memory()


def release_freed_memory() -> bool:
    """Give the memory that freed blocks hold back to the system (glibc's ``malloc_trim``), e.g. before
    a phase with a different allocation pattern; the kept blocks fault in again when reused. False
    where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True

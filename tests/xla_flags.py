"""XLA flags and JAX settings of every JAX process the suite starts (no jax import here: conftest
sets them first).

The suite checks numerics and behaviour, not speed, and spends most of its time compiling many
small model variants. XLA:CPU's newer fusion emitters take ~1.5x longer to compile them than the
classic ones (tests/hint_test.py + swinir_test.py, -n 2: 289 -> 203 CPU-s); both compute the same
operations. A flag this XLA does not know would abort every process, so it is used only when the
installed jaxlib carries its name.
"""
from __future__ import annotations

import functools
import importlib.util
import mmap
from pathlib import Path

FAST_COMPILE_FLAGS = ("xla_cpu_use_fusion_emitters=false",)


@functools.lru_cache(maxsize=None)
def _known(flag_name: str) -> bool:
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    for library in Path(list(spec.submodule_search_locations)[0]).glob("*.so"):
        with open(library, "rb") as f:
            try:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    if data.find(flag_name.encode()) >= 0:
                        return True
            except ValueError:  # an empty file cannot be mapped
                continue
    return False


def flags_for(num_devices: int) -> str:
    """``XLA_FLAGS`` for a process with ``num_devices`` CPU devices."""
    flags = [f"--xla_force_host_platform_device_count={num_devices}"]
    flags += [f"--{flag}" for flag in FAST_COMPILE_FLAGS if _known(flag.split("=")[0])]
    return " ".join(flags)


def process_env(num_devices: int) -> dict[str, str]:
    """The environment variables of a JAX process the suite starts: CPU, ``num_devices`` devices, the
    fast-compile flags, XLA's optimisation passes off as in the test process (conftest.py: they
    triple compile time and change results only at round-off), and bytecode cached."""
    return {"JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "XLA_FLAGS": flags_for(num_devices),
            # The suite starts ~90 Python processes: where the environment says not to write bytecode
            # (this sandbox does), each compiled the package's sources again (~0.4 s of a 3 s start).
            "PYTHONDONTWRITEBYTECODE": ""}

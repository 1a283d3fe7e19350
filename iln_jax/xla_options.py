"""XLA compile options per backend, in one place; every compilation of the project uses them.

* :func:`tuned` -- options that make the models faster on the current backend. On CPU, XLA (jax
  0.10) hands matmuls, convolutions, reductions and some elementwise fusions to YNNPACK. Only the
  reductions stay there: without them XLA's own column reductions and transposes get slower
  (the SwinIR-M x4 step +16 %); YNNPACK's convolutions are slow to differentiate (a 180->180 3x3
  conv at 4x48x48: 230 ms for the weight gradient, 34 ms in XLA's own kernel; with every type the
  step took 12.0-12.8 s, with matmuls and reductions 10.2-11.1 s, in an earlier measurement);
  and its matmuls are slower than Eigen's at these models' shapes (qkv 9216x180 @ 180x540: 12.0
  ms vs 8.4 ms alone; in the step, Eigen's / YNNPACK's time per interleaved round, median
  [quartiles]: SwinIR-M x4 4 x 48^2 0.967 [0.924, 1.008] over 14 rounds, its first RSTB alone
  0.941 [0.884, 0.981] over 30, HAT x4's first RHAG at 4 x 64^2
  0.924 [0.868, 0.958] over 16; all on the 2-core CPU). ``bench/train_step.py --xla-tuning both``
  repeats the comparison with and without the option. The option is probed once; an XLA that
  does not know it gets no options (and a warning) rather than a failed compilation. GPU/TPU:
  none needed.
* :func:`fast_compile` -- trade run time for compile time (CPU only): for tests and one-off jobs.

Use ``jax.jit(f, compiler_options=xla_options.tuned())`` or ``lowered.compile(xla_options.tuned())``;
``compiler_options(fast_compile=...)`` merges both. ``ILN_JAX_XLA_TUNING=0`` turns the tuning off
(to compare, or to rule it out).
"""
from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)

TUNING_ENV = "ILN_JAX_XLA_TUNING"
# YNNPACK fusion types XLA:CPU may form: reductions only; matmuls go to Eigen, convolutions and
# elementwise fusions to XLA's emitters and Eigen (the measurements are in the module docstring).
_CPU_TUNING = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


@functools.lru_cache(maxsize=None)
def _accepted(backend: str, options: tuple) -> bool:
    """Whether this XLA compiles with ``options`` (unknown options are errors, not warnings)."""
    try:
        jax.jit(lambda x: x + 1, backend=backend).lower(jnp.zeros((), jnp.float32)).compile(dict(options))
        return True
    except Exception as e:  # noqa: BLE001 - XLA raises JaxRuntimeError(INVALID_ARGUMENT) here
        log.warning("XLA on %s rejects the tuning options %s (%s); compiling without them", backend,
                    dict(options), str(e).splitlines()[0])
        return False


def tuned(backend: str | None = None) -> dict:
    """The speed options for ``backend`` (default: JAX's default backend); empty when none apply."""
    if os.environ.get(TUNING_ENV, "1") == "0":
        return {}
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return {}
    return dict(_CPU_TUNING) if _accepted(backend, tuple(sorted(_CPU_TUNING.items()))) else {}


def fast_compile(backend: str | None = None) -> dict:
    """Options that trade run time for compile time (CPU only; empty elsewhere)."""
    if (backend or jax.default_backend()) != "cpu":
        return {}
    return {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compiler_options(*, fast: bool = False, backend: str | None = None) -> dict:
    """:func:`tuned` plus, with ``fast``, :func:`fast_compile`."""
    return {**tuned(backend), **(fast_compile(backend) if fast else {})}

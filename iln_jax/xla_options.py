"""XLA compile options per backend, in one place; every compilation of the project uses them.

* :func:`tuned` -- options that make the models faster on the current backend. On CPU, XLA (jax
  0.10) hands matmuls, convolutions, reductions and some elementwise fusions to YNNPACK. Its
  convolutions are slow to differentiate, so only matmuls and reductions stay there: a faster and
  faster-compiling full-size train step (``bench/train_step.py --xla-tuning both`` repeats the
  comparison). Matmuls on Eigen instead were not kept: hardly faster, and Eigen's results depend
  on the number of rows, so a batch split over devices no longer gives the single device's outputs
  bit for bit (tests/validate_mesh_test.py). Numbers: docs/design_measurements.md. The option is
  probed once; an XLA that does
  not know it gets no options (and a warning) rather than a failed compilation. GPU/TPU: none
  needed.
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
# YNNPACK fusion types XLA:CPU may form: matmuls and reductions (without the reductions, XLA's own
# column reductions and transposes get slower than what is gained); convolutions and elementwise
# fusions go to XLA's emitters and Eigen.
_CPU_TUNING = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


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

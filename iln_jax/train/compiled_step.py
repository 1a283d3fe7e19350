"""The train step, compiled once per progressive phase (each has its own batch shape)."""
from __future__ import annotations

import time
from typing import Optional

from iln_jax import xla_options
from iln_jax.train.clock import TrainClock
from iln_jax.train.parallel import DataParallel
from iln_jax.train.phases import Phase
from iln_jax.train.state import TrainState
from iln_jax.train.step_factory import StepFn


class CompiledStep:
    """``step(state, batch, phase) -> (state, metrics)``, compiling on the first step of each
    phase. ``mesh``: ahead of time, so that the compile time is measured on its own
    (``seconds``); ``pmap`` compiles on its first call (with several processes its ahead-of-time
    form expects global shapes, its call site per-process ones). Compiling is not training time."""

    def __init__(self, step_fn: StepFn, parallel: DataParallel, clock: TrainClock, *, fast_compile: bool):
        self._step_fn, self._parallel, self._clock = step_fn, parallel, clock
        self._options = xla_options.compiler_options(fast=fast_compile)
        self._phase: Optional[Phase] = None
        self._compiled: Optional[StepFn] = None
        self.seconds = 0.0  # ahead-of-time compile time, all phases

    def __call__(self, state: TrainState, batch, phase: Phase) -> tuple[TrainState, dict]:
        if phase != self._phase:
            with self._clock.aside():
                self._compiled = self._compile(state, batch)
            self._phase = phase
        return self._compiled(state, batch)

    def _compile(self, state: TrainState, batch) -> StepFn:
        if self._parallel.mode == "pmap":
            return self._step_fn
        t0 = time.perf_counter()
        compiled = self._step_fn.lower(state, batch).compile(self._options)
        self.seconds += time.perf_counter() - t0
        return compiled

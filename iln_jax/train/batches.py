"""The training batches, step by step, across progressive phases.

Each phase reads its own data stream (``phases.py``: seed + phase index), ``train.prefetch`` batches
ahead on the devices (``prefetch.py``), and never past its last step. At a phase boundary the old
stream is closed and the next phase's starts, with its own patch and batch size.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

from iln_jax import data as data_lib
from iln_jax.train.phases import Phase, phase_at
from iln_jax.train.prefetch import DevicePrefetcher


def phase_stream(config, phase: Phase):
    """A fresh iterator over ``phase``'s batches (this process's share)."""
    dataset = data_lib.make_train_dataset(phase.data_config(config.data), seed=config.seed + phase.index,
                                          process_index=jax.process_index(), process_count=jax.process_count())
    return iter(dataset)


def close_stream(stream) -> None:
    if hasattr(stream, "close"):
        stream.close()  # stops grain's worker processes


class PhaseBatches:
    """``next(step)`` -> ``(local batch, global batch on the devices)`` for that step.

    ``stream``: the current phase's prefetcher, whose state (that of the last batch handed out) is
    what a checkpoint saves. ``announce`` prints the line that says a new phase started.
    """

    def __init__(self, config, phases: list[Phase], put: Callable[[dict], Any], *, phase: Phase, stream,
                 done: int, announce: Callable[[str], None]):
        self.config, self.phases, self.put, self.announce = config, phases, put, announce
        self.phase = phase
        self.step = done  # the step whose batch was handed out last
        self.stream = self._prefetch(stream, done)

    def next(self, step: int) -> tuple[dict, Any]:
        self.step = step
        if not self.phase.contains(step):
            self._start_phase(phase_at(self.phases, step), step)
        return next(self.stream)

    def _start_phase(self, phase: Phase, step: int) -> None:
        self.close()
        self.phase = phase
        self.stream = self._prefetch(phase_stream(self.config, phase), step - 1)
        self.announce(f"[iln_jax] step {step}: phase {phase.index + 1}/{len(self.phases)}, "
                      f"{phase.gt_size} px patches, batch {phase.batch_size}")

    def _prefetch(self, stream, done: int) -> DevicePrefetcher:
        last = min(self.phase.last_step, self.config.train.num_steps)
        return DevicePrefetcher(stream, self.put, size=self.config.train.prefetch, limit=max(0, last - done))

    def close(self) -> None:
        close_stream(self.stream)

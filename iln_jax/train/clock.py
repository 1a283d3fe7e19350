"""Training time: the wall time between two log rows, less the time spent aside (compiling the
step, checkpointing, validating, recording diagnostics), so that steps/s measures the steps."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


class TrainClock:
    def __init__(self):
        self.total = 0.0  # training seconds of every lap so far
        self._lap_start = time.perf_counter()
        self._aside = 0.0

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """The time spent in the block is not training time."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._aside += time.perf_counter() - t0

    def lap(self) -> float:
        """Training seconds since the previous lap (or since the clock was made)."""
        now = time.perf_counter()
        seconds = now - self._lap_start - self._aside
        self.total += seconds
        self._lap_start, self._aside = now, 0.0
        return seconds

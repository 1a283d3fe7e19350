"""Training metrics: left on the devices after each step, fetched together, logged as rows.

The host never waits for a step it has just dispatched: a step's metrics stay on the devices in
:class:`PendingMetrics` until one ``device_get`` fetches all of them, every ``train.log_every``
steps (and before a checkpoint or a validation). :class:`MetricLog` then writes their mean as one
row of ``metrics_train.csv`` / ``metrics.jsonl`` / TensorBoard, with the measured steps/s, and
advances the progress bar.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax

from iln_jax.train.clock import TrainClock
from iln_jax.train.hooks.base import Hook, Step
from iln_jax.train.hooks.non_finite import Window
from iln_jax.train.logging import MetricWriter, Progress
from iln_jax.train.state import TrainState


class PendingMetrics:
    """The metrics of the steps not fetched yet; ``check`` sees every fetched window first."""

    def __init__(self, check: Callable[[Window], None]):
        self._check = check
        self._pending: list[tuple[int, dict]] = []
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, step: int, metrics: dict) -> None:
        self._pending.append((step, metrics))

    def fetch(self) -> None:
        """Fetch (and check) every pending step's metrics; a no-op when none is pending."""
        if not self._pending:
            return
        window = [(s, {k: float(v) for k, v in m.items()}) for s, m in jax.device_get(self._pending)]
        self._pending.clear()
        self._check(window)
        for _, m in window:
            for k, v in m.items():
                self._sums[k] = self._sums.get(k, 0.0) + v
            self._count += 1

    def take_mean(self) -> dict[str, float]:
        """The mean of each metric over the steps fetched since the last call."""
        mean = {k: v / self._count for k, v in self._sums.items()}
        self._sums, self._count = {}, 0
        return mean


class MetricLog(Hook):
    """Every ``train.log_every`` steps and at the last: one row of the fetched steps' means."""

    def __init__(self, pending: PendingMetrics, writer: MetricWriter, progress: Progress, clock: TrainClock, *,
                 every: int, progressive: bool):
        self.pending, self.writer, self.progress, self.clock = pending, writer, progress, clock
        self.every = every
        self.progressive = progressive  # rows name the patch size
        self.last_row: dict[str, float] = {}
        self._steps = 0  # since the last row

    def __call__(self, step: Step) -> None:
        self.pending.add(step.number, step.metrics)
        self._steps += 1
        if not step.due(self.every):
            return
        self.pending.fetch()
        steps_per_sec = self._steps / max(self.clock.lap(), 1e-9)
        row = {**self.pending.take_mean(), "steps_per_sec": steps_per_sec,
               "patches_per_sec": steps_per_sec * step.phase.batch_size}
        if self.progressive:
            row["patch_size"] = step.phase.gt_size
        self.writer.write_scalars(step.number, row)
        self.progress.update(self._steps, {"loss": row["loss"], "lr": row["lr"]})
        self.last_row, self._steps = row, 0

    def finish(self, state: TrainState, step: int, status: Optional[str]) -> dict:
        self.pending.fetch()  # the steps after the last row are checked too
        return {"final_train_loss": self.last_row.get("loss")}

"""What every hook is: an object called after each training step with that :class:`Step`.

The loop knows nothing else about checkpoints, validation, logs or signals. A hook acts when its
step comes (:meth:`Step.due`), may end the run after the step by returning a status
("preempted"), and is told once how the run ended (:meth:`Hook.finish`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from iln_jax.train.clock import TrainClock
from iln_jax.train.phases import Phase
from iln_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class Step:
    """One training step, as the hooks see it after it was dispatched."""

    number: int          # counted from 1
    state: TrainState    # after the step (still being computed: reading it waits)
    metrics: dict        # the step's scalars, on the devices
    batch: Any           # the global batch the step trained on, on the devices
    local_batch: dict    # this process's part of it, in host memory
    phase: Phase
    data: Any            # the data stream, positioned after this step's batch (saved with checkpoints)
    last: bool           # the run's final step (``train.num_steps``)

    def due(self, every: int) -> bool:
        """Whether an action of period ``every`` runs now: at multiples of ``every`` (if > 0)
        and at the run's final step."""
        return self.last or (every > 0 and self.number % every == 0)


class Hook:
    """One concern of the loop (a checkpoint, a validation, a log row, a signal)."""

    aside = False  # True: the time it takes is not training time (see TrainClock)

    def __call__(self, step: Step) -> Optional[str]:
        """Act after ``step`` if due; a returned status (e.g. "preempted") ends the run after it."""
        raise NotImplementedError

    def finish(self, state: TrainState, step: int, status: Optional[str]) -> dict:
        """The loop ended without an error after ``step`` with ``state`` (``status`` None: it ran
        to the end; also when no step ran, as for a resume at the final step): finish the hook's
        work and return what it adds to the run's summary."""
        return {}


class Hooks:
    """A run's hooks, called in order after every step."""

    def __init__(self, hooks: Sequence[Hook], clock: TrainClock):
        self.hooks = list(hooks)
        self._clock = clock

    def __call__(self, step: Step) -> Optional[str]:
        for hook in self.hooks:
            if hook.aside:
                with self._clock.aside():
                    status = hook(step)
            else:
                status = hook(step)
            if status:
                return status
        return None

    def finish(self, state: TrainState, step: int, status: Optional[str]) -> dict:
        """Every hook's :meth:`Hook.finish`, in order; their summary entries together."""
        report = {}
        for hook in self.hooks:
            report.update(hook.finish(state, step, status))
        return report

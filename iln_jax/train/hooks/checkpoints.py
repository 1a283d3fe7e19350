"""Checkpoints of the state, the data stream and the config (``checkpoint.py``) during the run."""
from __future__ import annotations

from typing import Callable, Optional

from iln_jax.train.checkpoint import Checkpointer
from iln_jax.train.hooks.base import Hook, Step
from iln_jax.train.parallel import DataParallel
from iln_jax.train.state import TrainState


class Checkpoints(Hook):
    """Saves every ``train.checkpoint_every`` steps and at the last; ``before_save`` (the pending
    metrics' fetch and non-finite check) runs first, so a non-finite state is never saved. A save
    that failed in the background stops the run at the next step, not an interval later."""

    aside = True

    def __init__(self, checkpointer: Checkpointer, parallel: DataParallel, config: dict, *, every: int,
                 before_save: Callable[[], None]):
        self.checkpointer, self.parallel, self.config = checkpointer, parallel, config
        self.every = every
        self.before_save = before_save

    def __call__(self, step: Step) -> None:
        if step.due(self.every):
            self.save(step, force=step.last)
        self.checkpointer.check()  # a flag check while a save is in progress

    def save(self, step: Step, *, force: bool = False) -> None:
        """Save ``step`` (``force``: even off the interval)."""
        self.before_save()
        self.checkpointer.save(step.number, self.parallel.to_canonical(step.state), step.data, self.config,
                               force=force)

    def finish(self, state: TrainState, step: int, status: Optional[str]) -> dict:
        self.checkpointer.close()  # waits for (and checks) the last save
        return {}

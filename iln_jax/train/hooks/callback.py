"""The caller's ``on_step(step, state)`` of ``train_and_evaluate`` (custom logging, fault injection)."""
from __future__ import annotations

from typing import Callable

from iln_jax.train.hooks.base import Hook, Step
from iln_jax.train.state import TrainState


class Callback(Hook):
    """Calls ``on_step(step number, state)`` after the step's checkpoint and validation."""

    def __init__(self, on_step: Callable[[int, TrainState], None]):
        self.on_step = on_step

    def __call__(self, step: Step) -> None:
        self.on_step(step.number, step.state)

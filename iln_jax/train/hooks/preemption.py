"""SIGTERM during the run (``preemption.py`` sees it): checkpoint the current step and stop."""
from __future__ import annotations

from typing import Callable, Optional

import jax

from iln_jax.train.hooks.base import Hook, Step
from iln_jax.train.hooks.checkpoints import Checkpoints
from iln_jax.train.preemption import PreemptionGuard

PREEMPTED = "preempted"


def preempted_before_start(guard: PreemptionGuard, say: Callable[[str], None]) -> Optional[str]:
    """"preempted" if a SIGTERM came during start-up: the run ends before its first step (nothing
    new to save). With several processes the first agreement, at a step, decides."""
    if guard.requested and jax.process_count() == 1:
        say("[iln_jax] preempted (SIGTERM) before the first step; re-run the same command to resume")
        return PREEMPTED
    return None


class Preemption(Hook):
    """Once the processes agree that one got SIGTERM, save this step and end the run."""

    def __init__(self, guard: PreemptionGuard, checkpoints: Checkpoints, say: Callable[[str], None]):
        self.guard, self.checkpoints, self.say = guard, checkpoints, say

    def __call__(self, step: Step) -> Optional[str]:
        if not self.guard.reached(step.number):
            return None
        self.checkpoints.save(step, force=True)
        self.say(f"[iln_jax] preempted (SIGTERM): saved step {step.number}; re-run the same command to resume")
        return PREEMPTED

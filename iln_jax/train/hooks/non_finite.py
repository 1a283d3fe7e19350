"""The non-finite stop: a NaN/inf loss or gradient norm ends the run before that state is saved.

Step metrics are fetched in windows (:class:`~iln_jax.train.hooks.metric_log.PendingMetrics`), so
this check runs on each fetched window, before anything else reads it; a checkpoint save always
fetches first, so a non-finite state is never checkpointed.
"""
from __future__ import annotations

import math

from iln_jax.errors import IlnJaxError
from iln_jax.train.checkpoint import Checkpointer

Window = list[tuple[int, dict[str, float]]]  # (step, its fetched metrics), in step order


class NonFiniteLossError(IlnJaxError, FloatingPointError):
    """Training produced a NaN/inf loss or gradient norm."""


class NonFiniteCheck:
    def __init__(self, checkpointer: Checkpointer):
        self.checkpointer = checkpointer

    def __call__(self, window: Window) -> None:
        """Raise :class:`NonFiniteLossError` at the window's first non-finite step, naming the
        window and the newest checkpoint (once its save has finished)."""
        for step, m in window:
            if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
                raise NonFiniteLossError(self._message(step, m, window))

    def _message(self, step: int, m: dict, window: Window) -> str:
        ckpt = self.checkpointer
        ckpt.wait()
        last = ckpt.latest_step()
        where = (f"The last good checkpoint is step {last} in {ckpt.directory}" if last is not None
                 else "No checkpoint was saved yet (re-running starts from scratch)")
        steps = f"steps {window[0][0]}-{window[-1][0]}" if len(window) > 1 else f"step {step}"
        return (f"Non-finite training loss at step {step} (loss={m['loss']}, grad_norm={m['grad_norm']}; the first "
                f"non-finite one of {steps}, whose metrics were fetched together); stopping. {where}. "
                f"Lower optim.lr, add warmup (optim.warmup_steps) or clip gradients (optim.grad_clip)")

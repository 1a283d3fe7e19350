"""What the training loop does after each step, one concern per hook, called in this order:

* :mod:`~iln_jax.train.hooks.metric_log` -- step metrics fetched together every ``train.log_every``
  steps, one log row of their means, the progress bar (:mod:`~iln_jax.train.hooks.non_finite`
  checks each fetched window first: a non-finite loss stops the run)
* :mod:`~iln_jax.train.hooks.diagnostics` -- the paper's per-block statistics
* :mod:`~iln_jax.train.hooks.checkpoints` -- saves, and a failed background save stops the run
* :mod:`~iln_jax.train.hooks.validation` -- PSNR/SSIM on the validation images
* :mod:`~iln_jax.train.hooks.callback` -- the caller's ``on_step``
* :mod:`~iln_jax.train.hooks.lock` -- a lost work-directory lock stops the run
* :mod:`~iln_jax.train.hooks.preemption` -- SIGTERM: save this step and stop

Every hook has one interface (:mod:`~iln_jax.train.hooks.base`): ``hook(step)`` after each step,
``hook.finish(state, step, status)`` when the loop ends without an error.
"""
from iln_jax.train.hooks.base import Hook, Hooks, Step
from iln_jax.train.hooks.callback import Callback
from iln_jax.train.hooks.checkpoints import Checkpoints
from iln_jax.train.hooks.diagnostics import Diagnostics
from iln_jax.train.hooks.lock import LockCheck
from iln_jax.train.hooks.metric_log import MetricLog, PendingMetrics
from iln_jax.train.hooks.non_finite import NonFiniteCheck, NonFiniteLossError
from iln_jax.train.hooks.preemption import PREEMPTED, Preemption, preempted_before_start
from iln_jax.train.hooks.validation import Validation, make_validator, weight_tags

__all__ = ["PREEMPTED", "Callback", "Checkpoints", "Diagnostics", "Hook", "Hooks", "LockCheck", "MetricLog",
           "NonFiniteCheck", "NonFiniteLossError", "PendingMetrics", "Preemption", "Step", "Validation",
           "make_validator", "preempted_before_start", "weight_tags"]

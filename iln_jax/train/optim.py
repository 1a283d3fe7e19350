"""Optimizers and learning-rate schedules of the official recipes, built from ``config.optim``.

* ``multistep``: BasicSR/PyTorch ``MultiStepLR`` -- ``lr * gamma**k`` after ``k`` milestones
  (the value for update ``t`` (0-based) is scaled once ``t >= milestone``).
* ``cosine_restart``: BasicSR's ``CosineAnnealingRestartCyclicLR`` (Restormer/HINT): period ``i``
  goes from ``lr * restart_weights[i]`` down to ``eta_mins[i]`` on a half cosine.
* ``constant``.

An optional linear warmup multiplies the first ``warmup_steps`` updates (BasicSR's
``warmup_iter``). ``grad_clip > 0`` clips the global gradient norm first (Restormer uses 0.01).
EMA of the parameters lives in the train step, not here.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax

SCHEDULES = ("multistep", "cosine_restart", "constant")
OPTIMIZERS = ("adam", "adamw")


def make_schedule(cfg) -> optax.Schedule:
    """The learning rate per step from ``config.optim``: ``multistep`` (lr times gamma at each
    milestone), ``cosine_restart`` (BasicSR's CosineAnnealingRestartLR) or ``constant``, after
    ``warmup_steps`` of linear warm-up."""
    if cfg.schedule == "multistep":
        sched = optax.piecewise_constant_schedule(cfg.lr, {int(m): cfg.gamma for m in cfg.milestones})
    elif cfg.schedule == "cosine_restart":
        if not (len(cfg.periods) == len(cfg.restart_weights) == len(cfg.eta_mins)):
            raise ValueError("optim.periods, optim.restart_weights and optim.eta_mins need equal lengths")
        pieces = [_cosine(cfg.lr * w, int(p), m) for p, w, m in zip(cfg.periods, cfg.restart_weights, cfg.eta_mins)]
        sched = optax.join_schedules(pieces, list(_cumsum(int(p) for p in cfg.periods))[:-1])
    elif cfg.schedule == "constant":
        sched = optax.constant_schedule(cfg.lr)
    else:
        raise ValueError(f"Unknown optim.schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
    if cfg.warmup_steps > 0:
        warm = int(cfg.warmup_steps)
        base = sched
        sched = lambda t: base(t) * jnp.minimum(1.0, (t + 1) / warm)  # noqa: E731
    return sched


def _cosine(peak: float, period: int, eta_min: float) -> optax.Schedule:
    def sched(t):
        frac = jnp.clip(t / period, 0.0, 1.0)
        return eta_min + 0.5 * (peak - eta_min) * (1.0 + jnp.cos(jnp.pi * frac))
    return sched


def _cumsum(values):
    total = 0
    for v in values:
        total += v
        yield total


def make_optimizer(cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(tx, schedule)`` for ``config.optim``."""
    schedule = make_schedule(cfg)
    if cfg.optimizer == "adam":
        # PyTorch Adam's weight_decay is L2 added to the gradient (coupled), before the moments.
        opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
        if cfg.weight_decay:
            opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay), opt)
    elif cfg.optimizer == "adamw":
        opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"Unknown optim.optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if cfg.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    return opt, schedule

"""Per-tensor comparison of a port's gradients, optimizer steps and EMA with the official ones.

Each tensor is held to its own scale, so a small tensor (a relative-position table, a channel-
attention squeeze, an i-LN affine: 1e-4..1e-6 of the model's largest gradient) is checked as tightly
as a large one. Steps and the EMA are compared through their moves from the starting weights,
``p - p0``: the EMA moves ~6e-7 in two steps at decay 0.999, far below the weights' own size, so
comparing the weights themselves cannot tell an updated EMA from one never updated.

What a faithful float32 port reaches on every golden (measured, in every execution mode): gradients
within 2.1e-5 of the tensor's own max (most within 5e-6), step moves within 2.5e-3 of the tensor's
largest move (entries whose gradient is not round-off), EMA moves within two float32 spacings of the
weight (the EMA rounds each update to the weight's precision, and moves only ~6e-7 in two steps).
The tolerances below leave a factor of 4 or more above that, and are still 200x below a 2 % error in
one gradient tensor, and far below an EMA that is not updated or uses the wrong decay
(``tests/grad_checks_test.py``).
"""
from __future__ import annotations

import numpy as np

GRAD_RTOL = 1e-4   # per tensor, x max|official gradient of that tensor|
GRAD_FLOOR = 1e-8  # x max|official gradient| over the model: a tensor whose gradient is all round-off
MOVE_RTOL = 1e-2   # steps and EMA, per tensor, x max|official move of that tensor|
# Adam's first steps are ~ lr * g / |g|: where |g| is round-off (a key bias, a dead ReLU) the step's
# sign is, too. Entries with |g| <= ROUNDOFF x the tensor's max gradient are not compared.
ROUNDOFF = 1e-4
SPACINGS = 4       # + this many float32 spacings of p0: the rounding of p0 + move, twice, in either code


def gradient_failures(ours: dict, official: dict, rtol: float = GRAD_RTOL) -> list[str]:
    """One line per tensor whose gradient is off by more than its tolerance."""
    floor = GRAD_FLOOR * max(float(np.abs(g).max()) for g in official.values())
    failures = []
    for key, want in official.items():
        err = float(np.abs(ours[key].astype(np.float64) - want).max())
        scale = float(np.abs(want).max())
        if err > rtol * scale + floor:
            failures.append(f"grad {key}: max err {err:.3g} = {err / max(scale, 1e-300):.3g} x its max|grad| {scale:.3g}")
    return failures


def move_failures(part: str, ours: dict, official: dict, start: dict, grads: dict) -> list[str]:
    """One line per tensor whose move ``p - p0`` (after an Adam step, or of the EMA) is off."""
    failures = []
    for key, want in official.items():
        p0 = start[key].astype(np.float64)
        got_move, want_move = ours[key].astype(np.float64) - p0, want.astype(np.float64) - p0
        g = np.abs(grads[key])
        slack = SPACINGS * np.spacing(np.abs(start[key]).astype(np.float32)).astype(np.float64)
        if g.max() == 0:  # no gradient (an official module unused in this forward): it must not move
            scale, excess = 0.0, np.abs(got_move) - slack
        else:
            meaningful = g > ROUNDOFF * g.max()
            scale = float(np.abs(want_move[meaningful]).max())
            excess = np.where(meaningful, np.abs(got_move - want_move) - (MOVE_RTOL * scale + slack), -np.inf)
        if excess.max() > 0:
            i = np.unravel_index(np.argmax(excess), excess.shape)
            failures.append(f"{part} {key}: move {got_move[i]:.4g}, official {want_move[i]:.4g} at {tuple(map(int, i))} "
                            f"(tensor's max official move {scale:.3g})")
    return failures

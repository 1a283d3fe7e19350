"""The paper's "did not converge" mark (†) for one grid run, with the reason in words.

A run did not converge when (each test in this order; every one that fires is reported):

* its training loss became non-finite (the loop stopped; the message names the step);
* it has no measurements (its weights could not be loaded);
* its last logged training loss is not finite, or not below its first logged one (each logged
  value is the mean over the ``train.log_every`` steps before it);
* an evaluated dataset has a non-finite PSNR or non-finite output pixels (eval mode).

PSNR below bicubic is not a criterion: short runs are below it and still learning.
"""
from __future__ import annotations

import math
import re

# The training loop's NonFiniteLossError message starts "Non-finite training loss at step S (loss=L,
# grad_norm=G; ..." and goes on with advice: the table keeps the numbers.
_DIVERGED = re.compile(r"at step (\d+) \(loss=([^,]+), grad_norm=([^;)]+)")

def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and math.isfinite(v) else str(v)


def _loss_reason(result: dict) -> str | None:
    losses = result.get("losses") or []
    if len(losses) < 2:
        return None
    first, last = losses[0], losses[-1]
    steps = result.get("loss_steps") or []
    at = (lambda i: f" (step {steps[i]})") if len(steps) == len(losses) else (lambda i: "")
    if not (isinstance(last, (int, float)) and math.isfinite(last)):
        return f"last logged training loss{at(-1)} is {last}"
    if last >= first:
        return (f"training loss did not decrease: last logged {_num(last)}{at(-1)} >= first logged "
                f"{_num(first)}{at(0)}")
    return None


def failures(result: dict) -> list[str]:
    """Why the run did not converge (empty: it converged)."""
    reasons = []
    if result.get("diverged"):
        m = _DIVERGED.search(result["diverged"])
        reasons.append(f"non-finite training loss at step {m[1]} (loss {m[2]}, gradient norm {m[3]})" if m
                       else f"non-finite training loss: {result['diverged']}")
    if not result.get("datasets"):
        why = result.get("load_error")
        reasons.append("no measurements" + (f" (weights could not be loaded: {why})" if why else ""))
    loss = _loss_reason(result)
    if loss:
        reasons.append(loss)
    for name, row in (result.get("datasets") or {}).items():
        m = row.get("eval") or {}
        psnr = m.get("psnr")
        if psnr is None or not math.isfinite(psnr):
            reasons.append(f"PSNR on {name} is {psnr}")
        if m.get("nonfinite_pixels"):
            reasons.append(f"{m['nonfinite_pixels']} non-finite output pixels on {name}")
    return reasons

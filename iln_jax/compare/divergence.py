"""How far two sets of weights are apart: ``||a - b|| / ||b||`` over the whole model and per group.

Groups follow the official module tree: a parameter ``layers.3.residual_group.blocks.0.attn.qkv.weight``
belongs to ``layers.3`` (a residual group), ``conv_first.weight`` to ``conv_first``; containers of
numbered children (``layers``, ``encoder_level1``...) are split by child. Norms are taken in float64.
"""
from __future__ import annotations

import numpy as np

WHOLE = "(model)"


def group_of(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


def relative_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """``{WHOLE: ||a - b|| / ||b||, group: the same over the group's parameters}`` over ``b``'s names."""
    missing = sorted(set(b) - set(a))
    if missing:
        raise KeyError(f"parameters missing on one side: {missing[:5]}")
    diff2, ref2 = {}, {}
    for name, ref in b.items():
        g = group_of(name)
        d = np.asarray(a[name], np.float64) - np.asarray(ref, np.float64)
        diff2[g] = diff2.get(g, 0.0) + float(np.sum(d * d))
        ref2[g] = ref2.get(g, 0.0) + float(np.sum(np.asarray(ref, np.float64) ** 2))
    out = {WHOLE: _ratio(sum(diff2.values()), sum(ref2.values()))}
    out.update({g: _ratio(diff2[g], ref2[g]) for g in diff2})
    return out


def _ratio(diff2: float, ref2: float) -> float:
    if ref2 == 0.0:
        return 0.0 if diff2 == 0.0 else float("inf")
    return float(np.sqrt(diff2 / ref2))


def first_to_drift(ratios_by_group: dict[str, list[float]], log_steps: list[int], factor: float) -> dict:
    """The group whose JAX-PyTorch / floor ratio first exceeds ``factor`` (and at which log step),
    or ``{}`` when none does."""
    for i, step in enumerate(log_steps):
        over = {g: r[i] for g, r in ratios_by_group.items() if g != WHOLE and np.isfinite(r[i]) and r[i] > factor}
        if over:
            worst = max(over, key=over.get)
            return {"group": worst, "step": step, "ratio": over[worst]}
    return {}

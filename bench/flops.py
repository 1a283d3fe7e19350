"""FLOPs of a train step, three ways, for the roofline and MFU columns of the benchmarks.

* :func:`step_model_flops` -- the *model* FLOPs (MFU's numerator): the multiply-adds of every matmul
  and convolution of the step (forward, backward; 2 FLOPs each), counted on the step's jaxpr after
  dead-code elimination, for the model without remat (recomputation is not model work), with the
  XLA attention (a fused kernel hides its matmuls) and in float32 (the count does not depend on the
  dtype). Elementwise work (norms, softmax, GELU, Adam) is not counted: the same categories as
  PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` (mm, bmm, convolution and their backward).
* :func:`xla_flops` -- what XLA's cost analysis of a compiled program counts: everything, elementwise
  operations included, after its own rewrites (recomputation included; library calls such as cuDNN
  attention are not seen).
* :func:`torch_flops` -- ``FlopCounterMode`` around a PyTorch callable (the official model's
  loss + backward), the cross-check of the first.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np


def _dot_flops(eqn) -> int:
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    return 2 * int(np.prod(lhs, dtype=np.int64)) * int(np.prod(rhs_free, dtype=np.int64))


def _conv_flops(eqn) -> int:
    out, rhs = eqn.outvars[0].aval.shape, eqn.invars[1].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    # every output element: one multiply-add per kernel tap and input feature of its group
    return 2 * int(np.prod(out, dtype=np.int64)) * (int(np.prod(rhs, dtype=np.int64)) // out_features)


def _sub_jaxprs(value):
    from jax.extend import core
    for item in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(item, core.ClosedJaxpr):
            yield item.jaxpr
        elif isinstance(item, core.Jaxpr):
            yield item


def jaxpr_matmul_flops(jaxpr) -> int:
    """2 x the multiply-adds of the dots and convolutions of ``jaxpr`` (a Jaxpr), nested ones included:
    a scan's body counts ``length`` times, a conditional its costliest branch, a while loop's body once."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        subs = [jaxpr_matmul_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v)]
        if not subs:
            continue
        if name == "cond":
            total += max(subs)
        else:
            total += sum(subs) * (int(eqn.params["length"]) if name == "scan" else 1)
    return total


def _without_dead_code(jaxpr):
    """``jaxpr`` with what does not reach its outputs removed (XLA drops it too: e.g. the input
    gradient of the first convolution); as it is when JAX's (internal) pass is not available."""
    try:
        from jax._src.interpreters import partial_eval as pe
        return pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))[0]
    except Exception:  # noqa: BLE001 - an internal API: count without it rather than fail
        return jaxpr


def step_model_flops(c) -> int:
    """Model FLOPs of one train step of config ``c`` (its global batch), from the step's jaxpr (no
    arrays are allocated): the model without remat, with the XLA attention, in float32."""
    import jax
    from iln_jax.train import DataParallel, build_model, make_step
    from iln_jax.train.step_factory import model_in_channels

    c = c.copy_and_resolve_references()
    with c.unlocked():
        for key, plain in (("remat_policy", "none"), ("attention_impl", "xla")):
            if key in c.model.kwargs:
                c.model.kwargs[key] = plain
        c.train.compute_dtype = "float32"
    dp = DataParallel("mesh")
    model = build_model(c)
    init_state, step = make_step(c, model, dp)
    b, p, s = c.data.batch_size, c.data.patch_size, max(1, c.data.scale)
    ch = model_in_channels(model)
    batch = {"lq": jax.ShapeDtypeStruct((b, p, p, ch), np.float32),
             "gt": jax.ShapeDtypeStruct((b, p * s, p * s, ch), np.float32)}
    closed = jax.make_jaxpr(step)(init_state.abstract(), batch)
    return jaxpr_matmul_flops(_without_dead_code(closed.jaxpr))


def xla_flops(compiled) -> Optional[float]:
    """FLOPs of a compiled program by XLA's cost analysis (None where the backend gives none)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def torch_flops(fn: Callable[[], object]) -> int:
    """FLOPs PyTorch's ``FlopCounterMode`` counts in one call of ``fn`` (mm, bmm, convolutions and
    their backward)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())

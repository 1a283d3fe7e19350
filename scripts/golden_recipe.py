"""The golden recipe of ``tests/data/golden_grad/README.md``, run on an official PyTorch module.

Forward: every parameter perturbed ``p += 0.05 * N(0, 1)`` (so biases, norm affines and position
tables all matter), eval mode, float32, CPU. Training: the L1 (mean) loss against ``output + 0.1 *
N(0, 1)`` (numpy ``RandomState(0)``), its gradient, two ``torch.optim.Adam`` steps with BasicSR's
settings on the same batch, and BasicSR's parameter EMA (``ema = ema * d + p * (1 - d)``, d = 0.999)
after each step. Everything also runs in float64, and the float32 run's distance from it is
recorded, so a reader sees what round-off a faithful float32 port can be held to.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

import numpy as np
import torch

PERTURB = 0.05
TARGET_NOISE = 0.1
ADAM = dict(lr=2e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
EMA_DECAY = 0.999


def perturb_(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(PERTURB * torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.dtype))


def numpy_state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def forward(model: torch.nn.Module, x: np.ndarray, before: Optional[Callable] = None) -> np.ndarray:
    if before is not None:
        before(model)
    with torch.no_grad():
        return model(torch.from_numpy(x).to(next(model.parameters()).dtype)).numpy()


def make_target(output: np.ndarray) -> np.ndarray:
    noise = np.random.RandomState(0).standard_normal(output.shape).astype(np.float32)
    return (output.astype(np.float32) + np.float32(TARGET_NOISE) * noise).astype(np.float32)


def train(model: torch.nn.Module, x: np.ndarray, target: np.ndarray, before: Optional[Callable] = None) -> dict:
    """Gradient, two Adam steps and the EMA; ``before(model)`` runs before every forward (HINT
    resets its cross-call cache there). Returns numpy arrays keyed as the golden files are."""
    dtype = next(model.parameters()).dtype
    xt, tt = torch.from_numpy(x).to(dtype), torch.from_numpy(target).to(dtype)
    named = dict(model.named_parameters())
    optimizer = torch.optim.Adam(named.values(), **ADAM)
    ema = {k: p.detach().clone() for k, p in named.items()}

    def loss_and_grad():
        optimizer.zero_grad(set_to_none=True)
        if before is not None:
            before(model)
        loss = torch.mean(torch.abs(model(xt) - tt))
        loss.backward()
        return loss

    def snapshot(tensors):
        return {k: v.detach().cpu().numpy().copy() for k, v in tensors.items()}

    out = {"loss": float(loss_and_grad())}
    out["grad"] = {k: (np.zeros(tuple(p.shape), np.float32 if dtype == torch.float32 else np.float64)
                       if p.grad is None else p.grad.numpy().copy()) for k, p in named.items()}
    out["params_without_grad"] = sorted(k for k, p in named.items() if p.grad is None)
    for step in (1, 2):
        if step == 2:
            out["loss2"] = float(loss_and_grad())
        optimizer.step()
        with torch.no_grad():
            for k, p in named.items():
                ema[k].mul_(EMA_DECAY).add_(p.detach(), alpha=1 - EMA_DECAY)
        out[f"step{step}"] = snapshot(named)
    out["ema2"] = snapshot(ema)
    return out


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(b).max())
    return float(np.abs(a.astype(np.float64) - b).max() / scale) if scale else float(np.abs(a).max())


def float64_distance(model: torch.nn.Module, x: np.ndarray, output: np.ndarray, target: np.ndarray,
                     result: dict, before: Optional[Callable] = None) -> dict:
    """How far the float32 golden is from the same official code in float64: the output, the worst
    gradient tensor (relative to its own max), and the two steps' and the EMA's moves ``p - p0``
    (relative to the tensor's largest move). The EMA moves ~6e-7 in two steps, so where weights are
    near 1 the float32 EMA's own rounding (6e-8 per update) is tens of percent of its move: a test
    adds a few float32 spacings of the weight to its tolerance."""
    double = copy.deepcopy(model).double()
    start = {k: p.detach().numpy().astype(np.float64) for k, p in double.named_parameters()}
    out64 = forward(double, x.astype(np.float64), before)
    ref = train(double, x.astype(np.float64), target.astype(np.float64), before)

    def worst(part, moved):
        rows = []
        for k, want in ref[part].items():
            got, want = result[part][k].astype(np.float64), want
            if moved:
                got, want = got - start[k], want - start[k]
            if np.abs(want).max() > 0:
                rows.append((_max_rel(got, want), k))
        return max(rows) if rows else (0.0, "")

    return {"output_rel": _max_rel(output, out64), "loss_rel": abs(result["loss"] / ref["loss"] - 1),
            "worst_grad_tensor_rel": worst("grad", False), "worst_step2_move_rel": worst("step2", True),
            "worst_ema2_move_rel": worst("ema2", True)}

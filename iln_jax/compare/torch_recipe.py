"""The official training recipe on the PyTorch side: what BasicSR's ``SRModel`` does per iteration.

``optimize_parameters``: zero the gradients, L1 (mean) between the network's output and the target,
backward, ``torch.optim.Adam`` step; then ``model_ema``: ``ema = decay * ema + (1 - decay) * param``
over the parameters. The learning rate of update ``t`` (0-based) is set from the same schedule
function iln_jax's optimizer uses, so both see the same value at every step (BasicSR's
``MultiStepLR`` gives these values; setting them directly avoids re-deriving its milestone
arithmetic).
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np


class TorchTrainer:
    """One official model, trained in place on NHWC numpy batches."""

    def __init__(self, model, *, schedule: Callable[[int], float], b1: float, b2: float, eps: float,
                 ema_decay: float, multiple: int = 1, padding: str = "none", scale: int = 1):
        import torch
        self.torch = torch
        self.model = model.train()
        self.names = [n for n, _ in model.named_parameters()]
        self.optimizer = torch.optim.Adam(model.parameters(), lr=float(schedule(0)), betas=(b1, b2), eps=eps)
        self.schedule = schedule
        self.ema_decay = ema_decay
        self.ema = [p.detach().clone() for p in model.parameters()] if ema_decay > 0 else None
        self.step_count = 0
        self.seconds = 0.0
        self.padding = dict(multiple=multiple, padding=padding, scale=scale)  # as the Flax twin pads

    @staticmethod
    def to_nchw(x: np.ndarray):
        import torch
        return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))

    def step(self, batch: dict) -> float:
        """One update on ``{"lq", "gt"}`` (NHWC); returns the loss before the update."""
        t = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.schedule(self.step_count))
        self.optimizer.zero_grad(set_to_none=True)
        loss = (self.model(self.to_nchw(batch["lq"])) - self.to_nchw(batch["gt"])).abs().mean()
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            with self.torch.no_grad():
                for e, p in zip(self.ema, self.model.parameters()):
                    e.mul_(self.ema_decay).add_(p, alpha=1.0 - self.ema_decay)
        self.step_count += 1
        loss = float(loss.detach())
        self.seconds += time.perf_counter() - t
        return loss

    def params(self) -> dict[str, np.ndarray]:
        return {n: p.detach().cpu().numpy().copy() for n, p in zip(self.names, self.model.parameters())}

    def ema_params(self) -> dict[str, np.ndarray]:
        if self.ema is None:
            return self.params()
        return {n: e.cpu().numpy().copy() for n, e in zip(self.names, self.ema)}

    def eval_model(self, which: str):
        """A copy of the model in eval mode holding the raw or the EMA weights (training goes on
        with the original)."""
        model = copy_module(self.model).eval()
        if which == "ema" and self.ema is not None:
            with self.torch.no_grad():
                for p, e in zip(model.parameters(), self.ema):
                    p.copy_(e)
        return model

    def restorer(self, which: str) -> "TorchRestorer":
        return TorchRestorer(self.eval_model(which), **self.padding)


def copy_module(model):
    """``copy.deepcopy(model)``, also for a model that keeps tensors of its last forward pass on its
    modules (official i-LN HAT does): PyTorch refuses to deep-copy a tensor that is not a graph leaf,
    so those are copied detached."""
    memo = {}
    for module in model.modules():
        for value in (*vars(module).values(), *module._buffers.values()):
            if getattr(value, "is_leaf", True) is False:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


class TorchRestorer:
    """The official model on one image, padded as the Flax model pads (``padding``, window multiple)."""

    def __init__(self, model, *, multiple: int, padding: str, scale: int):
        self.model, self.multiple, self.padding, self.scale = model, multiple, padding, scale

    def restore(self, lq: np.ndarray) -> np.ndarray:
        import torch
        from iln_jax.layers.padding import pad_to_multiple
        h, w = lq.shape[:2]
        x = np.asarray(pad_to_multiple(np.asarray(lq, np.float32)[None], self.multiple, self.padding))
        with torch.no_grad():
            y = self.model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
        return y.numpy().transpose(0, 2, 3, 1)[0, : h * self.scale, : w * self.scale]


def perturb_one_ulp(model, seed: int) -> None:
    """Move every parameter element one float32 ulp up or down (seeded signs): the smallest change
    a float32 run can see, whose growth over training is the chaos floor."""
    import torch
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():
            value = p.detach().cpu().numpy()
            direction = np.where(rng.random(value.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
            p.copy_(torch.from_numpy(np.nextafter(value, direction).astype(np.float32)))

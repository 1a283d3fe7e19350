"""The iln_jax side of a run-level comparison: ``train.py``'s own step on one device, with the
interface of :class:`~iln_jax.compare.torch_recipe.TorchTrainer` (``step``, ``params``,
``ema_params``, ``restorer``), so that the comparison loop treats both frameworks alike."""
from __future__ import annotations

import time

import jax
import numpy as np

from iln_jax.compare.pair import ModelPair
from iln_jax.inference import Restorer
from iln_jax.train import DataParallel, make_step
from iln_jax.train.state import host_copy


class JaxTrainer:
    def __init__(self, config, pair: ModelPair, *, patch_size: int, in_channels: int):
        self.pair, self.names = pair, None
        self.device = DataParallel("mesh", devices=jax.devices()[:1])
        init_state, self.step_fn = make_step(config, pair.flax_module, self.device, patch_size=patch_size,
                                             in_channels=in_channels)
        self.state = init_state(params=pair.variables["params"])  # the official weights, converted
        model_state = {k: v for k, v in pair.variables.items() if k != "params"}
        if model_state:
            self.state = self.state.replace(model_state=jax.device_put(model_state, self.device.replicated))
        self.seconds, self.compile_seconds = 0.0, None

    def step(self, batch: dict) -> float:
        t = time.perf_counter()
        self.state, metrics = self.step_fn(self.state, self.device.shard_batch(batch))
        loss = float(metrics["loss"])
        if self.compile_seconds is None:  # the first call compiles
            self.compile_seconds = time.perf_counter() - t
        else:
            self.seconds += time.perf_counter() - t
        return loss

    def _named(self, params) -> dict[str, np.ndarray]:
        named = self.pair.torch_named({"params": host_copy(params), **host_copy(self.state.model_state)})
        return {n: named[n] for n in (self.names or named)}

    def params(self) -> dict[str, np.ndarray]:
        return self._named(self.state.params)

    def ema_params(self) -> dict[str, np.ndarray]:
        return self._named(self.state.ema_params if self.state.ema_params is not None else self.state.params)

    def restorer(self, which: str) -> Restorer:
        params = self.state.ema_params if which == "ema" and self.state.ema_params is not None else self.state.params
        return Restorer(self.pair.flax_module, host_copy({"params": params, **self.state.model_state}))

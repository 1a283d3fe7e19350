"""``make_step(config, model, parallel) -> (init_state, step_fn)``: the one place a training step is built.

``train.py``'s loop, the benchmarks, the run-level comparison with PyTorch and the tests all take
their step from here, so what is timed or compared is what trains: the same optimizer and schedule
(``config.optim``), loss (``config.loss``), EMA decay, mixing augmentation (``config.mixing``),
compute dtype (``config.train.compute_dtype``), seed (``config.seed``) and data-parallel mode.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import optax

from iln_jax.train import optim
from iln_jax.train.parallel import DataParallel
from iln_jax.train.state import TrainState, create_train_state
from iln_jax.train.step import train_step

StepFn = Callable[[TrainState, dict], tuple[TrainState, dict]]


@dataclasses.dataclass(frozen=True)
class StateFactory:
    """Builds the run's first :class:`TrainState`, replicated over ``parallel``'s devices.

    Calling it gives a fresh state from ``config.seed``; ``params=`` starts from given weights
    instead (converted PyTorch weights, another run's): the optimizer and the EMA start from them,
    everything else (the step's rng, model state) is the fresh state's.
    """

    model: nn.Module
    tx: optax.GradientTransformation
    parallel: DataParallel
    seed: int
    sample_shape: tuple[int, ...]
    ema: bool

    def pure(self, params: Any = None) -> TrainState:
        """The state constructor itself: pure, so it can be jitted or ``eval_shape``-d."""
        return create_train_state(self.model, self.tx, seed=self.seed, sample_shape=self.sample_shape,
                                  ema=self.ema, params=params)

    def __call__(self, params: Any = None) -> TrainState:
        if params is None:
            return self.parallel.init_state(self.pure)
        # params travel as an argument: closed over, they would be baked into the program as constants
        return jax.jit(self.pure, out_shardings=self.parallel.replicated)(params)

    def abstract(self) -> TrainState:
        """Shapes, dtypes and shardings of the state, without computing it (restore targets)."""
        return self.parallel.abstract_state(self.pure)

    def for_model(self, model: nn.Module) -> "StateFactory":
        """The same factory for another form of the model (e.g. the other ``scan_layers`` layout)."""
        return dataclasses.replace(self, model=model)


def sample_shape(config, model: nn.Module, patch_size: Optional[int] = None,
                 in_channels: Optional[int] = None) -> tuple[int, ...]:
    """The input shape parameters are initialised with (one patch of the first training phase;
    parameter shapes do not depend on it)."""
    p = int(patch_size or config.data.patch_size)
    return (1, p, p, int(in_channels or model_in_channels(model)))


def model_in_channels(model: nn.Module) -> int:
    for field in ("in_chans", "inp_channels"):
        if hasattr(model, field):
            return int(getattr(model, field))
    raise TypeError(f"{type(model).__name__} declares neither in_chans nor inp_channels")


def make_step(config, model: nn.Module, parallel: Optional[DataParallel] = None, *,
              patch_size: Optional[int] = None, in_channels: Optional[int] = None) -> tuple[StateFactory, StepFn]:
    """The run's state factory and its step, compiled for ``parallel`` (default: ``config.train.parallel``).

    Args:
      config: a run config (``configs/*.py``): reads ``seed``, ``optim``, ``loss``, ``mixing``,
        ``train.compute_dtype``, ``data.patch_size``.
      model: the model to train (``build_model(config)``); under pmap the step uses it with
        BatchNorm averaging over the device axis.
      parallel: the data-parallel mode and devices.
      patch_size: the input patch side parameters are initialised with (default ``data.patch_size``).
      in_channels: the input channels (default: the model's ``in_chans`` / ``inp_channels``; a model
        of the user's own that declares neither must give them).

    Returns:
      ``(init_state, step_fn)``: ``init_state()`` (or ``init_state(params=...)``) gives the first
      state; ``step_fn(state, batch) -> (state, metrics)`` is jitted on the mesh or pmapped, with
      the input state donated. It is not compiled yet: ``step_fn.lower(state, batch).compile(options)``
      compiles ahead of time (mesh), pmap compiles on the first call.
    """
    parallel = parallel or DataParallel(config.train.parallel)
    tx, schedule = optim.make_optimizer(config.optim)
    init_state = StateFactory(model=model, tx=tx, parallel=parallel, seed=int(config.seed),
                              sample_shape=sample_shape(config, model, patch_size, in_channels),
                              ema=config.optim.ema_decay > 0)
    step = functools.partial(train_step, model=parallel.model_for_training(model), tx=tx, schedule=schedule,
                             loss_cfg=config.loss, ema_decay=config.optim.ema_decay,
                             mixup_cfg=config.mixing, compute_dtype=config.train.compute_dtype)
    return init_state, parallel.compile(step)

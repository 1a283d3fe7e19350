"""The training state: one pytree with everything a step reads and writes, and nothing else."""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from iln_jax.models import scan_layout


class TrainState(flax.struct.PyTreeNode):
    """``step`` counts completed updates; ``rng`` is raw key data (uint32) so Orbax stores it as-is.

    ``model_state`` holds every non-parameter collection the model mutates in training (BatchNorm's
    ``batch_stats``), empty for the other norms; ``ema_params`` is None when EMA is off.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    model_state: Any
    rng: jax.Array

    def variables(self, which: str = "ema") -> dict:
        """The variables to evaluate with: EMA weights (falling back to the raw ones) or raw."""
        params = self.ema_params if which == "ema" and self.ema_params is not None else self.params
        return {"params": params, **self.model_state}


def init_variables(model: nn.Module, rng: jax.Array, sample_shape: tuple[int, ...]) -> dict:
    """``model``'s variables initialised from ``rng`` (for parameters and dropout alike) on a zero
    input of ``sample_shape`` (B, H, W, C)."""
    x = jnp.zeros(sample_shape, jnp.float32)
    return model.init({"params": rng, "dropout": rng}, x, train=False)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, *, seed: int,
                       sample_shape: tuple[int, ...], ema: bool, params: Any = None) -> TrainState:
    """A fresh state; pure, so it can be jitted with output shardings or ``eval_shape``-d.

    ``params``: start from these weights instead of the seeded initialisation (the optimizer and
    the EMA start from them; the model state and the step's rng are the seeded ones). Under jit the
    unused initial parameters are not computed.
    """
    root = jax.random.key(seed)
    init_key, train_key = jax.random.split(root)
    variables = dict(init_variables(model, init_key, sample_shape))
    initial = variables.pop("params")
    if params is None:
        params = initial
    elif jax.tree.structure(params) != jax.tree.structure(initial):
        raise ValueError("create_train_state: the given params do not have the model's parameter tree")
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        model_state=variables,
        rng=jax.random.key_data(train_key),
    )


def param_count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def local_replica(tree: Any) -> Any:
    """This process's copy of a replicated tree, on its first local device (also for arrays
    that span several processes, which cannot be read whole from one process)."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data if isinstance(x, jax.Array) else x, tree)


def host_copy(tree: Any) -> Any:
    """A numpy copy of a replicated tree (see :func:`local_replica`)."""
    return jax.device_get(local_replica(tree))




def relayout_state(state: TrainState, source_model: nn.Module, target_model: nn.Module) -> TrainState:
    """``state`` of ``source_model`` in the variable layout of ``target_model`` (``scan_layers``
    on one side, off on the other): parameters, EMA, every parameter-shaped optimizer tree (Adam's
    moments) and the model state, stacked or unstacked (``iln_jax.models.scan_layout``). Exact."""
    if scan_layout.is_scanned(source_model) == scan_layout.is_scanned(target_model):
        return state
    structure = jax.tree.structure(state.params)

    def is_params(node) -> bool:
        return isinstance(node, dict) and jax.tree.structure(node) == structure

    def convert(node):
        if not is_params(node):
            return node
        return scan_layout.params_to_scanned(target_model, scan_layout.params_to_unrolled(source_model, node))

    model_state = state.model_state
    if jax.tree.leaves(model_state):
        model_state = scan_layout.to_scanned(target_model, scan_layout.to_unrolled(source_model, model_state))
    return state.replace(params=convert(state.params),
                         ema_params=None if state.ema_params is None else convert(state.ema_params),
                         opt_state=jax.tree.map(convert, state.opt_state, is_leaf=is_params),
                         model_state=model_state)

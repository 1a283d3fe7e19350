"""Data parallelism over every device of every process, two ways with the same result.

* ``mesh``: ``jax.jit`` over a 1-D ``Mesh(jax.devices(), ("data",))`` with ``AxisType.Auto``
  (an Explicit mesh cannot reshape a batch-sharded Swin feature map). The batch is one global
  array sharded on its first axis, the state is replicated; XLA's SPMD partitioner makes the loss,
  the gradients and BatchNorm's statistics global. Works across processes (multi-host pods).
* ``pmap``: ``jax.pmap`` over the local devices with ``axis_name="batch"``; each device gets
  ``B / device_count`` examples, gradients and the loss are ``pmean``-ed over all devices (of all
  processes) and the model is cloned with ``bn_axis_name="batch"`` so BatchNorm averages its
  statistics too. The state is broadcast in (``in_axes=None``) and comes back replicated
  (``out_axes=None``), so no stacked copies of the state exist. Both modes donate the state: the
  step's input state is invalid after the call (one copy of parameters + optimizer in memory).

Both give the single-device result on the same global batch up to float summation order. With
stochastic layers (dropout, drop-path) the random draws differ between the modes: under pmap each
device draws for its own examples from ``fold_in(key, device)``, under ``mesh`` one draw covers
the global batch (identical to one device).

The canonical state in both modes is a pytree of global arrays replicated on the mesh
(:meth:`DataParallel.replicated`); checkpoints save and restore that form.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from iln_jax import xla_options

MODES = ("mesh", "pmap")


PMAP_AXIS = "batch"


class DataParallel:
    def __init__(self, mode: str = "mesh", devices=None):
        if mode not in MODES:
            raise ValueError(f"Unknown train.parallel {mode!r}; valid: {', '.join(MODES)}")
        self.mode = mode
        devices = jax.devices() if devices is None else devices
        self.mesh = Mesh(np.asarray(devices), ("data",), axis_types=(AxisType.Auto,))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def axis_name(self):
        return PMAP_AXIS if self.mode == "pmap" else None

    def check_batch_size(self, global_batch: int) -> None:
        if global_batch % self.num_devices:
            raise ValueError(f"data.batch_size={global_batch} (global) must be divisible by the "
                             f"{self.num_devices} devices ({jax.process_count()} process(es))")

    def model_for_training(self, model):
        """pmap needs BatchNorm to average over the device axis; jit does it by sharding."""
        if self.mode == "pmap" and hasattr(model, "bn_axis_name"):
            return model.clone(bn_axis_name=PMAP_AXIS)
        return model

    def compile(self, step_fn: Callable) -> Callable:
        """``step_fn(state, batch) -> (state, metrics)``, compiled once for this mode."""
        if self.mode == "mesh":
            return jax.jit(step_fn, in_shardings=(self.replicated, self.batch_sharding),
                           out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))
        pstep = jax.pmap(functools.partial(step_fn, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS,
                         in_axes=(None, 0), out_axes=(None, None), donate_argnums=(0,))
        return pstep

    def shard_batch(self, local_batch: dict) -> Any:
        """This process's part of the global batch -> what the compiled step takes."""
        if self.mode == "mesh":
            return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
                    for k, v in local_batch.items()}
        n = jax.local_device_count()
        return {k: np.asarray(v).reshape(n, v.shape[0] // n, *v.shape[1:]) for k, v in local_batch.items()}

    def to_canonical(self, tree: Any) -> Any:
        """The state as global replicated arrays on the mesh (pmap returns process-local arrays)."""
        if self.mode == "mesh" or jax.process_count() == 1:
            return tree
        return multihost_utils.host_local_array_to_global_array(tree, self.mesh, P())

    def init_state(self, create_fn: Callable[[], Any]) -> Any:
        """Run a pure state constructor directly into replicated arrays.

        Compiled with XLA's backend optimizations off on CPU: it runs once, and the optimized
        compile of thousands of threefry ops takes several times longer than the init itself.
        """
        lowered = jax.jit(create_fn, out_shardings=self.replicated).lower()
        return lowered.compile(xla_options.fast_compile())()

    def abstract_state(self, create_fn: Callable[[], Any]) -> Any:
        shapes = jax.eval_shape(create_fn)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated), shapes)

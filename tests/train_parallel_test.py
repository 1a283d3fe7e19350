"""Data parallelism on 8 CPU devices: ``mesh`` and ``pmap`` equal one device on the same global batch.

BatchNorm is the norm under test: its statistics must be global over the whole batch in both
modes (per-device statistics would be visibly different because the examples differ in scale).
"""
import jax
import numpy as np
import pytest

from iln_jax.train import DataParallel, build_model, make_step
from iln_jax.xla_options import fast_compile
from train_util import assert_trees_close, host_tree, tiny_config

STEPS = 3


@pytest.fixture(scope="module")
def setup():
    assert jax.device_count() == 8, "tests/conftest.py provides 8 CPU devices"
    # Adam turns float noise in a coordinate whose exact gradient is zero (the conv bias right in
    # front of a BatchNorm, cancelled by its mean subtraction) into a full +-lr step; a larger eps
    # keeps the comparison about the data-parallel arithmetic. No stochastic layers: their random
    # draws legitimately differ between pmap (per device) and one device.
    config = tiny_config("configs/swinir.py:tiny=1,norm=batchnorm",
                         **{"model.kwargs.drop_path_rate": 0.0, "optim.eps": 1e-3, "data.patch_size": 8})
    rng = np.random.default_rng(1)
    scales = np.linspace(0.2, 3.0, 8, dtype=np.float32)[:, None, None, None]
    batches = [{"lq": rng.random((8, 8, 8, 3), np.float32) * scales,
                "gt": rng.random((8, 16, 16, 3), np.float32)} for _ in range(STEPS)]
    return config, build_model(config), batches


def _run(setup, mode, devices):
    config, model, batches = setup
    dp = DataParallel(mode, devices=devices)
    init_state, step_fn = make_step(config, model, dp)
    state = init_state()
    fn = None
    losses = []
    for b in batches:
        sharded = dp.shard_batch(b)
        if fn is None:
            fn = step_fn.lower(state, sharded).compile(fast_compile())
        previous = state
        state, m = fn(state, sharded)
        losses.append(float(m["loss"]))
        # the step donates its input state: one copy of the parameters and optimizer in memory
        assert all(x.is_deleted() for x in jax.tree.leaves(previous.params))
    return host_tree(state), np.array(losses)


@pytest.fixture(scope="module")
def single(setup):
    return _run(setup, "mesh", jax.devices()[:1])


@pytest.mark.parametrize("mode", ["mesh", "pmap"])
def test_data_parallel_equals_one_device(setup, single, mode):
    state, losses = _run(setup, mode, None)
    ref_state, ref_losses = single
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert int(state.step) == STEPS
    assert_trees_close(state.params, ref_state.params)
    assert_trees_close(state.ema_params, ref_state.ema_params)
    # running BatchNorm statistics: global-batch moments, identical to one device
    assert_trees_close(state.model_state, ref_state.model_state)
    assert_trees_close(state.opt_state, ref_state.opt_state, rtol=1e-4, atol=1e-8)


def test_batch_must_divide_devices():
    with pytest.raises(ValueError, match="divisible by the 8 devices"):
        DataParallel("mesh").check_batch_size(12)
    with pytest.raises(ValueError, match="valid: mesh, pmap"):
        DataParallel("dp")

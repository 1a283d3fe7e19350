"""One-step and few-step tests of the pure train step on tiny configs (one device)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iln_jax.train import DataParallel, build_model, create_train_state, train_step
from iln_jax.train import optim
from iln_jax.xla_options import fast_compile
from iln_jax.train.step import fft_loss, mixup, pixel_loss
from train_util import assert_trees_equal, host_tree, tiny_config


def _setup(norm: str):
    config = tiny_config(f"configs/swinir.py:tiny=1,norm={norm}")
    model = build_model(config)
    tx, schedule = optim.make_optimizer(config.optim)
    state = DataParallel("mesh", devices=jax.devices()[:1]).init_state(
        functools.partial(create_train_state, model, tx, seed=0, sample_shape=(1, 8, 8, 3), ema=True))
    traces = []

    def counted(state, batch):
        traces.append(1)
        return train_step(state, batch, model=model, tx=tx, schedule=schedule, loss_cfg=config.loss,
                          ema_decay=config.optim.ema_decay)

    rng = np.random.default_rng(0)
    batches = [{"lq": rng.random((4, 8, 8, 3), np.float32), "gt": rng.random((4, 16, 16, 3), np.float32)}
               for _ in range(3)]
    step = jax.jit(counted, compiler_options=fast_compile())
    return dict(config=config, state=state, step=step, traces=traces, batches=batches)


@pytest.fixture(scope="module")
def iln():
    return _setup("iln")


@pytest.fixture(scope="module")
def bn():
    return _setup("batchnorm")


def test_one_step_finite_changes_params_and_counts(iln):
    state, metrics = iln["step"](iln["state"], iln["batches"][0])
    assert set(metrics) == {"loss", "grad_norm", "param_norm", "update_norm", "lr"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["lr"]) == pytest.approx(2e-4)
    assert int(state.step) == 1
    before, after = jax.tree.leaves(iln["state"].params), jax.tree.leaves(state.params)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after) if a.size > 1)
    # EMA 0.999 of (init, new params)
    decay = iln["config"].optim.ema_decay
    for e, p0, p1 in zip(jax.tree.leaves(state.ema_params), before, after):
        np.testing.assert_allclose(e, decay * p0 + (1 - decay) * p1, rtol=1e-6, atol=1e-7)
    assert float(metrics["param_norm"]) == pytest.approx(float(optax.global_norm(state.params)), rel=1e-6)


def test_few_steps_single_trace_and_loss_decreases(iln):
    state, losses = iln["state"], []
    for _ in range(6):
        state, m = iln["step"](state, iln["batches"][0])
        losses.append(float(m["loss"]))
    state, _ = iln["step"](state, iln["batches"][1])  # new data, same shapes: no retrace
    assert len(iln["traces"]) == 1
    assert int(state.step) == 7
    assert losses[-1] < losses[0]


def test_deterministic(iln):
    a, ma = iln["step"](iln["state"], iln["batches"][2])
    b, mb = iln["step"](iln["state"], iln["batches"][2])
    assert_trees_equal(host_tree(a), host_tree(b))
    assert_trees_equal(host_tree(ma), host_tree(mb))


def test_batchnorm_statistics_are_state(bn):
    state = bn["state"]
    assert "batch_stats" in state.model_state
    new, m = bn["step"](state, bn["batches"][0])
    assert np.isfinite(float(m["loss"]))
    old_stats, new_stats = jax.tree.leaves(state.model_state), jax.tree.leaves(new.model_state)
    assert any(not np.array_equal(a, b) for a, b in zip(old_stats, new_stats))


def test_losses():
    x = jnp.zeros((1, 4, 4, 3))
    y = jnp.full((1, 4, 4, 3), 0.5)
    assert float(pixel_loss(x, y, "l1")) == pytest.approx(0.5)
    assert float(pixel_loss(x, y, "l2")) == pytest.approx(0.25)
    assert float(pixel_loss(x, y, "charbonnier", eps=1e-9)) == pytest.approx(0.5, rel=1e-6)
    # a constant offset lives in the DC coefficient only: |FFT| there is 16 * 0.5
    assert float(fft_loss(x, y)) == pytest.approx(0.5 * (8.0 / 16), rel=1e-6)
    with pytest.raises(ValueError, match="valid: l1, charbonnier, l2"):
        pixel_loss(x, y, "huber")


def test_schedules():
    config = tiny_config("configs/swinir.py", **{"optim.milestones": (10, 20), "optim.gamma": 0.5})
    sched = optim.make_schedule(config.optim)
    assert [float(sched(t)) for t in (0, 9, 10, 19, 20)] == pytest.approx([2e-4, 2e-4, 1e-4, 1e-4, 5e-5])
    config = tiny_config("configs/swinir.py", **{"optim.schedule": "cosine_restart", "optim.lr": 3e-4,
                                                 "optim.periods": (10, 30), "optim.eta_mins": (3e-4, 1e-6)})
    sched = optim.make_schedule(config.optim)
    # Restormer: flat 3e-4 for the first period, then a cosine from 3e-4 to 1e-6.
    assert float(sched(5)) == pytest.approx(3e-4)
    assert float(sched(10)) == pytest.approx(3e-4)
    assert float(sched(25)) == pytest.approx(1e-6 + 0.5 * (3e-4 - 1e-6), rel=1e-5)
    assert float(sched(40)) == pytest.approx(1e-6, rel=1e-4)


def test_mixup():
    rng = np.random.default_rng(0)
    batch = {"lq": jnp.asarray(rng.random((6, 4, 4, 3), np.float32)),
             "gt": jnp.asarray(rng.random((6, 8, 8, 3), np.float32))}
    mixed = [mixup(batch, jax.random.key(i), beta=1.2, use_identity=True) for i in range(16)]
    identity = [np.array_equal(m["lq"], batch["lq"]) and np.array_equal(m["gt"], batch["gt"]) for m in mixed]
    assert 0 < sum(identity) < 16  # about half of the batches are left alone
    m = mixup(batch, jax.random.key(3), beta=1.2, use_identity=False)
    lam, partner = _recover_mix(np.asarray(m["lq"]), np.asarray(batch["lq"]))
    assert 0 < lam < 1 and sorted(partner) == list(range(6)) and (partner != np.arange(6)).any()
    # the target is mixed with the same lambda and the same partner as the input
    gt = np.asarray(batch["gt"])
    np.testing.assert_allclose(np.asarray(m["gt"]), lam * gt + (1 - lam) * gt[partner], rtol=1e-5, atol=1e-6)


def _recover_mix(mixed, x):
    """(lam, partner) with ``mixed[i] = lam * x[i] + (1 - lam) * x[partner[i]]``: for each image, the
    partner whose least-squares lambda leaves no residual (and lambda is the same for the batch)."""
    lams, partner = [], []
    for i in range(len(x)):
        fits = []
        for j in range(len(x)):
            d = (x[i] - x[j]).ravel()
            lam = 1.0 if j == i else float(d @ (mixed[i] - x[j]).ravel() / (d @ d))
            fits.append((float(np.abs(lam * x[i] + (1 - lam) * x[j] - mixed[i]).max()), j, lam))
        residual, j, lam = min(fits)
        assert residual < 1e-5, f"image {i} is no mix of two images of the batch"
        partner.append(j)
        if j != i:
            lams.append(lam)
    np.testing.assert_allclose(lams, lams[0], rtol=1e-4)  # one lambda for the whole batch
    return lams[0], np.asarray(partner)


# The tiny HAT's channel attention squeezes 8 channels to 2 whose ReLUs are both negative at
# init for this seed (a dead ReLU, no gradient to its convs); 8 squeeze channels keep them alive.
WIDE_SQUEEZE = {"model.kwargs.squeeze_factor": 1}


@pytest.mark.parametrize("spec, overrides", [("configs/hat.py:tiny=1,norm=iln", WIDE_SQUEEZE),
                                             ("configs/hat_mini_iln.py:tiny=1", WIDE_SQUEEZE),
                                             ("configs/drct.py:tiny=1,norm=iln", {})])
def test_other_backbones_train(spec, overrides):
    """HAT (incl. the official i-LN recipe) and DRCT: every parameter gets a gradient and the
    steps are finite."""
    config = tiny_config(spec, **overrides)
    model = build_model(config)
    tx, schedule = optim.make_optimizer(config.optim)
    p, s = config.data.patch_size, config.data.scale
    state = DataParallel("mesh", devices=jax.devices()[:1]).init_state(
        functools.partial(create_train_state, model, tx, seed=0, sample_shape=(1, p, p, 3), ema=True))
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule, loss_cfg=config.loss,
                                     ema_decay=config.optim.ema_decay), compiler_options=fast_compile())
    rng = np.random.default_rng(0)
    batch = {"lq": rng.random((2, p, p, 3), np.float32), "gt": rng.random((2, p * s, p * s, 3), np.float32)}
    new, metrics = step(state, batch)
    new, metrics = step(new, batch)
    assert int(new.step) == 2 and all(np.isfinite(float(v)) for v in metrics.values())
    flat_before = jax.tree_util.tree_flatten_with_path(state.params)[0]
    unchanged = [jax.tree_util.keystr(k) for (k, a), b in zip(flat_before, jax.tree.leaves(new.params))
                 if np.array_equal(a, b)]
    assert not unchanged, f"parameters without a gradient: {unchanged}"


@pytest.mark.parametrize("norm", ["iln", "batchnorm"])
def test_bfloat16_mixed_precision_keeps_float32_state_and_tracks_float32(norm):
    config = tiny_config(f"configs/swinir.py:tiny=1,norm={norm}")
    model = build_model(config)
    tx, schedule = optim.make_optimizer(config.optim)
    state = DataParallel("mesh", devices=jax.devices()[:1]).init_state(
        functools.partial(create_train_state, model, tx, seed=0, sample_shape=(1, 8, 8, 3), ema=True))
    rng = np.random.default_rng(0)
    batch = {"lq": rng.random((4, 8, 8, 3), np.float32), "gt": rng.random((4, 16, 16, 3), np.float32)}
    results = {}
    for dtype in ("float32", "bfloat16"):
        step = jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule, loss_cfg=config.loss,
                                         ema_decay=config.optim.ema_decay, compute_dtype=dtype),
                       compiler_options=fast_compile())
        results[dtype] = step(state, batch)
    (_, m32), (s16, m16) = results["float32"], results["bfloat16"]
    for tree in (s16.params, s16.ema_params, s16.opt_state, s16.model_state):
        assert all(x.dtype != jnp.bfloat16 for x in jax.tree.leaves(tree))
    loss32, loss16 = float(m32["loss"]), float(m16["loss"])
    assert loss16 != loss32  # the forward pass really ran in bfloat16 ...
    assert abs(loss16 - loss32) < 0.02 * loss32  # ... and stays within its round-off of float32
    assert float(m16["grad_norm"]) == pytest.approx(float(m32["grad_norm"]), rel=0.1)
    with pytest.raises(ValueError, match="compute_dtype 'float16'"):
        train_step(state, batch, model=model, tx=tx, schedule=schedule, loss_cfg=config.loss, compute_dtype="float16")

"""Training parity with the official PyTorch models: gradients, two Adam steps and the EMA.

``tests/data/golden_grad/`` (from ``../shared/golden_grad``; README there) holds, for the models of the
forward goldens, the official L1 loss and gradient at the golden weights and input, the parameters after
one and two ``torch.optim.Adam`` steps (BasicSR's settings) and the EMA (0.999) after them. The port's
gradients come from ``jax.value_and_grad`` of the same loss; the steps come from this project's own
``train_step`` with the optimizer that ``config.optim`` builds, so the test covers the code that trains.

Every check runs for each model execution mode (``scan_layers`` x ``remat_policy``): they change how
the network is traced and differentiated, never what it computes.
"""
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import golden
from iln_jax import convert, models
from iln_jax.train import optim
from iln_jax.train.state import TrainState
from iln_jax.train.step import train_step

GRAD_DIR = golden.DATA / "golden_grad"
# official class (meta_json "arch") -> converter arch
CONVERT_ARCH = {"SwinIR": "swinir", "HAT": "hat", "HAT_iLN": "hat_iln", "DRCT": "drct", "Restormer": "restormer"}
NAMES = ["swinir_sr_x2_pixelshuffle", "swinir_dn_3conv", "hat_sr_x2", "hat_iln_sr_x2", "drct_sr_x2",
         "restormer_withbias"]
MODES = {"unrolled": {}, "scanned": {"scan_layers": True}, "unrolled+remat": {"remat_policy": "block"},
         "scanned+remat": {"scan_layers": True, "remat_policy": "dots"}}

# What a faithful float32 port reaches (golden_grad/README.md): gradients ~6e-6 of max|grad|, Adam
# steps ~2e-5 absolute where the gradient is not round-off, EMA ~3e-7; with a margin.
GRAD_TOL = 2e-5      # x max|grad| over the model
STEP_TOL = 5e-5      # absolute, where |grad| is not round-off
EMA_TOL = 2e-6       # absolute
ROUNDOFF = 1e-5      # |grad| below this x max|grad|: Adam's lr * sign(g) is not meaningful


def _load(name):
    sd, kwargs, x, out = golden.load(name)
    npz = np.load(GRAD_DIR / f"{name}_grad.npz")
    arch = CONVERT_ARCH[json.loads(bytes(np.load(golden.DATA / f"{name}.npz")["meta_json"]))["arch"]]
    ref = {part: {k.split("/", 1)[1]: npz[k] for k in npz.files if k.startswith(part + "/")}
           for part in ("grad", "step1", "step2", "ema2")}
    target = npz["target"].transpose(0, 2, 3, 1)
    return arch, sd, kwargs, x, target, float(npz["loss"]), float(npz["loss2"]), ref


def _build(arch, sd, kwargs, mode):
    extra = dict(MODES[mode])
    if "drop_path_rate" in models.constructor_args(convert.arch_spec(arch).model_arch):
        extra["drop_path_rate"] = 0.0  # the goldens were made in eval mode; train_step runs train=True
    return convert.from_torch(arch, sd, **kwargs, **extra), {**kwargs, **extra}


def _torch_named(arch, kwargs, params) -> dict[str, np.ndarray]:
    return convert.to_torch(arch, {"params": params}, **kwargs)


def _optim_config():
    c = ml_collections.ConfigDict(dict(optimizer="adam", lr=2e-4, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0,
                                       schedule="constant", warmup_steps=0, grad_clip=0.0))
    return c


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", NAMES)
def test_gradients_two_adam_steps_and_ema_match_official(name, mode):
    arch, sd, kwargs, x, target, loss0, loss2, ref = _load(name)
    (module, variables), build_kwargs = _build(arch, sd, kwargs, mode)
    tx, schedule = optim.make_optimizer(_optim_config())
    loss_cfg = ml_collections.ConfigDict(dict(pixel="l1", charbonnier_eps=1e-9, fft_weight=0.0))
    params = variables["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       ema_params=jax.tree.map(jnp.copy, params),
                       model_state={k: v for k, v in variables.items() if k != "params"},
                       rng=jax.random.key_data(jax.random.key(0)))
    batch = {"lq": jnp.asarray(x), "gt": jnp.asarray(target)}

    @jax.jit  # one compilation: the gradient, and this project's train_step twice
    def run(state, batch):
        def loss_fn(p):
            pred = module.apply({**variables, "params": p}, batch["lq"])
            return jnp.mean(jnp.abs(pred - batch["gt"]))
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        step = functools.partial(train_step, model=module, tx=tx, schedule=schedule, loss_cfg=loss_cfg,
                                 ema_decay=0.999)
        state, m1 = step(state, batch)
        state, m2 = step(state, batch)
        return loss, grads, state, m1["loss"], m2["loss"]

    loss, grads, state, step1_loss, step2_loss = run(state, batch)
    np.testing.assert_allclose(float(loss), loss0, rtol=1e-5)
    np.testing.assert_allclose(float(step1_loss), loss0, rtol=1e-5)
    np.testing.assert_allclose(float(step2_loss), loss2, rtol=1e-5)

    official = ref["grad"]
    scale = max(float(np.abs(g).max()) for g in official.values())
    ours = _torch_named(arch, build_kwargs, grads)
    worst = max((float(np.abs(ours[k] - g).max()), k) for k, g in official.items())
    assert worst[0] <= GRAD_TOL * scale, f"{worst[1]}: |grad - official| = {worst[0]:.3g} (max|grad| {scale:.3g})"

    step2 = _torch_named(arch, build_kwargs, state.params)
    ema2 = _torch_named(arch, build_kwargs, state.ema_params)
    for key, want in ref["step2"].items():
        meaningful = np.abs(official[key]) > ROUNDOFF * scale
        err = np.abs(step2[key] - want)[meaningful]
        assert err.size == 0 or err.max() <= STEP_TOL, f"step2 {key}: max err {err.max():.3g}"
        np.testing.assert_allclose(ema2[key], ref["ema2"][key], atol=EMA_TOL, rtol=0, err_msg=f"ema2 {key}")

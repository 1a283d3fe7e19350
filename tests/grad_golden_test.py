"""Training parity with the official PyTorch models: output, loss, gradients, two Adam steps and the EMA.

``tests/data/golden_grad/`` (README there) holds, for the models of the forward goldens, the
official L1 loss and gradient at the golden weights and input, the parameters after one and two
``torch.optim.Adam`` steps (BasicSR's settings) and the EMA (0.999) after them. Everything on the
port's side comes from this project's own ``train_step`` with the optimizer that ``config.optim``
builds, so the test covers the code that trains: the gradient is the one the first step computes (a
pass-through transform in front of the optimizer keeps a copy; one compiled step serves both steps).
Every tensor is checked against its own scale, steps and EMA through their moves from the start
(``grad_checks``).

HINT: ``hint_faithful`` is the official model (every training forward starts without the cross-call
cache, as the port's stateless step does); ``hint_corrected`` is the corrected design written on the
official modules in PyTorch (``scripts/golden_hint_corrected.py``). ``restormer_biasfree`` is the
official Restormer with ExDA's options off; ExDA itself has no official code to compare with.

The checks run in each model execution mode (``scan_layers`` x ``remat_policy``): they change how the
network is traced and differentiated, never what it computes. The SR models and the shared
Restormer run in all four; the U-Nets made here in fewer (a U-Net compiles slowly; ``scan_remat_test``
compares the modes with the unrolled model on HINT and Restormer).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import golden
import grad_checks
from iln_jax import convert, models
from iln_jax.train import optim
from iln_jax.train.state import TrainState
from iln_jax.train.step import train_step

GRAD_DIR = golden.DATA / "golden_grad"
# official class (meta_json "arch") -> converter arch
CONVERT_ARCH = {"SwinIR": "swinir", "HAT": "hat", "HAT_iLN": "hat_iln", "DRCT": "drct", "Restormer": "restormer",
                "HINT": "hint"}
MODES = {"unrolled": {}, "scanned": {"scan_layers": True}, "unrolled+remat": {"remat_policy": "block"},
         "scanned+remat": {"scan_layers": True, "remat_policy": "dots"}}
EVERY_MODE = ["swinir_sr_x2_pixelshuffle", "swinir_dn_3conv", "hat_sr_x2", "hat_iln_sr_x2", "drct_sr_x2",
              "restormer_withbias"]
# The tiny U-Nets made by scripts/make_goldens.py: a U-Net compiles slowly (20-40 s of CPU here).
# hint_corrected and restormer_biasfree differ from the models above only inside one module.
CASES = ([(name, mode) for name in EVERY_MODE for mode in MODES]
         + [("hint_faithful", "unrolled"), ("hint_faithful", "scanned+remat"), ("hint_corrected", "unrolled"),
            ("restormer_biasfree", "unrolled")])
EMA_DECAY = 0.999
LOSS_RTOL = 1e-5


def _load(name):
    sd, kwargs, x, _ = golden.load(name)
    npz = np.load(GRAD_DIR / f"{name}_grad.npz")
    arch = CONVERT_ARCH[golden.meta(name)["arch"]]
    ref = {part: {k.split("/", 1)[1]: npz[k] for k in npz.files if k.startswith(part + "/")}
           for part in ("grad", "step1", "step2", "ema2")}
    target = golden.nhwc(npz["target"])
    return arch, sd, kwargs, x, target, float(npz["loss"]), float(npz["loss2"]), ref


def _build(arch, sd, kwargs, mode):
    extra = dict(MODES[mode])
    if "drop_path_rate" in models.constructor_args(convert.arch_spec(arch).model_arch):
        extra["drop_path_rate"] = 0.0  # the goldens were made in eval mode; train_step runs train=True
    return convert.from_torch(arch, sd, **kwargs, **extra), {**kwargs, **extra}


def _record_gradients() -> optax.GradientTransformation:
    return optax.GradientTransformation(init=lambda params: jax.tree.map(jnp.zeros_like, params),
                                        update=lambda updates, state, params=None: (updates, updates))


def _optim_config():
    return ml_collections.ConfigDict(dict(optimizer="adam", lr=2e-4, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0,
                                          schedule="constant", warmup_steps=0, grad_clip=0.0))


@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_gradients_two_adam_steps_and_ema_match_official(name, mode):
    arch, sd, kwargs, x, target, loss0, loss2, ref = _load(name)
    (module, variables), build_kwargs = _build(arch, sd, kwargs, mode)
    tx, schedule = optim.make_optimizer(_optim_config())
    tx = optax.chain(_record_gradients(), tx)  # passes the gradients on unchanged; keeps a copy in its state
    loss_cfg = ml_collections.ConfigDict(dict(pixel="l1", charbonnier_eps=1e-9, fft_weight=0.0))
    params = variables["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       ema_params=jax.tree.map(jnp.copy, params),
                       model_state={k: v for k, v in variables.items() if k != "params"},
                       rng=jax.random.key_data(jax.random.key(0)))
    batch = {"lq": jnp.asarray(x), "gt": jnp.asarray(target)}
    # this project's training step, compiled once and run twice
    step = jax.jit(lambda s, b: train_step(s, b, model=module, tx=tx, schedule=schedule, loss_cfg=loss_cfg,
                                           ema_decay=EMA_DECAY))
    state1, m1 = step(state, batch)
    state2, m2 = step(state1, batch)
    grads = state1.opt_state[0]  # the gradient of the first step: at the golden weights

    np.testing.assert_allclose(float(m1["loss"]), loss0, rtol=LOSS_RTOL)
    np.testing.assert_allclose(float(m2["loss"]), loss2, rtol=LOSS_RTOL)

    def torch_named(tree):
        return convert.to_torch(arch, {"params": tree}, **build_kwargs)

    official_grads = ref["grad"]
    failures = grad_checks.gradient_failures(torch_named(grads), official_grads)
    for part, tree in (("step1", state1.params), ("step2", state2.params), ("ema2", state2.ema_params)):
        failures += grad_checks.move_failures(part, torch_named(tree), ref[part], sd, official_grads)
    assert not failures, f"{len(failures)} tensors off:\n" + "\n".join(failures[:20])

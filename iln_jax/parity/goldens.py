"""The golden checks against the official PyTorch models, as reports: the tests assert on them and
``bench/accelerator.py`` runs them on a device (with and without :func:`full_precision`).

Forward goldens (``tests/data/<name>.npz``): the official model's output for its (perturbed) weights
and an input. Gradient goldens (``tests/data/golden_grad/<name>_grad.npz``, README there): the official
L1 loss and gradient at those weights, the parameters after two ``torch.optim.Adam`` steps and the EMA
after them. The port's gradient comes from ``jax.value_and_grad`` of the same loss, the steps from this
project's ``train_step`` with the optimizer ``config.optim`` builds, so the check covers the code that trains.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from iln_jax import convert, models

DATA_DIR = Path(__file__).resolve().parents[2] / "tests" / "data"
FORWARD_NAMES = ("swinir_sr_x2_pixelshuffle", "swinir_dn_3conv", "hat_sr_x2", "hat_iln_sr_x2", "drct_sr_x2",
                 "restormer_withbias")
# official class (meta_json "arch") -> converter arch
CONVERT_ARCH = {"SwinIR": "swinir", "HAT": "hat", "HAT_iLN": "hat_iln", "DRCT": "drct", "Restormer": "restormer"}
# Model execution modes: they change how the network is traced and differentiated, never what it computes.
MODES = {"unrolled": {}, "scanned": {"scan_layers": True}, "unrolled+remat": {"remat_policy": "block"},
         "scanned+remat": {"scan_layers": True, "remat_policy": "dots"}}

FORWARD_TOL = 1e-4   # max |out - official| / max |official|
# What a faithful float32 port reaches (golden_grad/README.md): gradients ~6e-6 of max|grad|, Adam
# steps ~2e-5 absolute where the gradient is not round-off, EMA ~3e-7; with a margin.
LOSS_RTOL = 1e-5
GRAD_TOL = 2e-5      # x max|grad| over the model
STEP_TOL = 5e-5      # absolute, where |grad| is not round-off
EMA_TOL = 2e-6       # absolute
ROUNDOFF = 1e-5      # |grad| below this x max|grad|: Adam's lr * sign(g) is not meaningful


def _npz(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"golden file {path} not found (tests/data of an iln_jax checkout)")
    return np.load(path)


def load(name: str, data_dir: Optional[Path] = None):
    """-> (state_dict, kwargs, input NHWC, output NHWC) of the forward golden ``name``."""
    npz = _npz(Path(data_dir or DATA_DIR) / f"{name}.npz")
    meta = json.loads(bytes(npz["meta_json"]))
    sd = {k[3:]: npz[k] for k in npz.files if k.startswith("sd/")}
    return sd, meta["kwargs"], npz["input"].transpose(0, 2, 3, 1), npz["output"].transpose(0, 2, 3, 1)


def converter_arch(name: str, data_dir: Optional[Path] = None) -> str:
    meta = json.loads(bytes(_npz(Path(data_dir or DATA_DIR) / f"{name}.npz")["meta_json"]))
    return CONVERT_ARCH[meta["arch"]]


def relative_error(out, ref) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def forward_report(name: str, data_dir: Optional[Path] = None) -> dict:
    """The converted official weights run on the golden input, against the official output."""
    sd, kwargs, x, ref = load(name, data_dir)
    module, variables = convert.from_torch(converter_arch(name, data_dir), sd, **kwargs)
    out = np.asarray(jax.jit(module.apply)(variables, x))
    if out.shape != ref.shape:
        return dict(name=name, relative_error=None, tolerance=FORWARD_TOL, passed=False,
                    failures=[f"output shape {out.shape}, official {ref.shape}"])
    err = relative_error(out, ref)
    return dict(name=name, relative_error=err, tolerance=FORWARD_TOL, passed=err < FORWARD_TOL,
                failures=[] if err < FORWARD_TOL else [f"relative error {err:.3g} >= {FORWARD_TOL:g}"])


def _load_grad(name: str, data_dir: Optional[Path]):
    data_dir = Path(data_dir or DATA_DIR)
    sd, kwargs, x, _ = load(name, data_dir)
    npz = _npz(data_dir / "golden_grad" / f"{name}_grad.npz")
    ref = {part: {k.split("/", 1)[1]: npz[k] for k in npz.files if k.startswith(part + "/")}
           for part in ("grad", "step1", "step2", "ema2")}
    target = npz["target"].transpose(0, 2, 3, 1)
    return sd, kwargs, x, target, float(npz["loss"]), float(npz["loss2"]), ref


def _optim_config():
    return ml_collections.ConfigDict(dict(optimizer="adam", lr=2e-4, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0,
                                          schedule="constant", warmup_steps=0, grad_clip=0.0))


def _run_two_steps(module, variables, x, target):
    """The L1 gradient at the golden weights and this project's train_step twice (one compilation)."""
    from iln_jax.train import optim
    from iln_jax.train.state import TrainState
    from iln_jax.train.step import train_step

    tx, schedule = optim.make_optimizer(_optim_config())
    loss_cfg = ml_collections.ConfigDict(dict(pixel="l1", charbonnier_eps=1e-9, fft_weight=0.0))
    params = variables["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       ema_params=jax.tree.map(jnp.copy, params),
                       model_state={k: v for k, v in variables.items() if k != "params"},
                       rng=jax.random.key_data(jax.random.key(0)))
    batch = {"lq": jnp.asarray(x), "gt": jnp.asarray(target)}

    @jax.jit
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

    return run(state, batch)


def grad_report(name: str, mode: str = "unrolled", data_dir: Optional[Path] = None) -> dict:
    """Loss, gradients, two Adam steps and the EMA of the port against the official ones, in execution
    mode ``mode`` (:data:`MODES`). ``failures`` lists what is out of tolerance (empty: passed)."""
    arch = converter_arch(name, data_dir)
    sd, kwargs, x, target, loss0, loss2, ref = _load_grad(name, data_dir)
    extra = dict(MODES[mode])
    if "drop_path_rate" in models.constructor_args(convert.arch_spec(arch).model_arch):
        extra["drop_path_rate"] = 0.0  # the goldens were made in eval mode; train_step runs train=True
    module, variables = convert.from_torch(arch, sd, **kwargs, **extra)
    build_kwargs = {**kwargs, **extra}
    loss, grads, state, step1_loss, step2_loss = _run_two_steps(module, variables, x, target)
    failures = []
    losses = {"loss": (float(loss), loss0), "step1_loss": (float(step1_loss), loss0),
              "step2_loss": (float(step2_loss), loss2)}
    for what, (ours, official) in losses.items():
        if abs(ours - official) > LOSS_RTOL * abs(official):
            failures.append(f"{what} {ours:.8g}, official {official:.8g}")

    def named(params):
        return convert.to_torch(arch, {"params": params}, **build_kwargs)

    official = ref["grad"]
    scale = max(float(np.abs(g).max()) for g in official.values())
    ours = named(grads)
    grad_err, grad_key = max((float(np.abs(ours[k] - g).max()), k) for k, g in official.items())
    if grad_err > GRAD_TOL * scale:
        failures.append(f"{grad_key}: |grad - official| = {grad_err:.3g} (max|grad| {scale:.3g})")
    step2, ema2 = named(state.params), named(state.ema_params)
    step_err, step_key, ema_err, ema_key = 0.0, None, 0.0, None
    for key, want in ref["step2"].items():
        err = np.abs(step2[key] - want)[np.abs(official[key]) > ROUNDOFF * scale]
        if err.size and err.max() > step_err:
            step_err, step_key = float(err.max()), key
        err = float(np.abs(ema2[key] - ref["ema2"][key]).max())
        if err > ema_err:
            ema_err, ema_key = err, key
    if step_err > STEP_TOL:
        failures.append(f"step2 {step_key}: max err {step_err:.3g}")
    if ema_err > EMA_TOL:
        failures.append(f"ema2 {ema_key}: max err {ema_err:.3g}")
    return dict(name=name, mode=mode, loss_relative_error=max(abs(a - b) / abs(b) for a, b in losses.values()),
                grad_max_abs_error=grad_err, grad_worst=grad_key, grad_scale=scale,
                grad_relative_to_scale=grad_err / scale, step2_max_error=step_err, step2_worst=step_key,
                ema2_max_error=ema_err, ema2_worst=ema_key, passed=not failures, failures=failures)

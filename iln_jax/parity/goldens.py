"""The golden checks against the official PyTorch models, as reports: the tests assert on them and
``bench/accelerator.py`` runs them on a device (with and without :func:`full_precision`).

Model goldens ``tests/data/<name>.npz``: the official model's output for its (perturbed) weights and
an input. Gradient goldens ``tests/data/golden_grad/<name>_grad.npz`` (README there): the official L1
loss and gradient at those weights, the parameters after two ``torch.optim.Adam`` steps and the EMA
after them. Padding goldens ``tests/data/padding/<name>.npz``: the weights of a model golden, an input
that is not a multiple of the window, and the official output through the official padding path.
The shared goldens come from ``../shared/golden*``; the others were made by ``scripts/make_goldens.py``.

Everything on the port's side of the gradient check comes from this project's own ``train_step``
with the optimizer that ``config.optim`` builds, so it covers the code that trains: the gradient is
the one the first step computes (a pass-through transform in front of the optimizer keeps a copy;
one compiled step serves both steps). Every tensor is held to its own scale, the steps and the EMA
through their moves from the start (:mod:`iln_jax.parity.checks`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from iln_jax import convert, models
from iln_jax.parity import checks

DATA_DIR = Path(__file__).resolve().parents[2] / "tests" / "data"
FORWARD_NAMES = ("swinir_sr_x2_pixelshuffle", "swinir_dn_3conv", "hat_sr_x2", "hat_iln_sr_x2", "drct_sr_x2",
                 "restormer_withbias")
# official class (meta_json "arch") -> converter arch
CONVERT_ARCH = {"SwinIR": "swinir", "HAT": "hat", "HAT_iLN": "hat_iln", "DRCT": "drct", "Restormer": "restormer",
                "HINT": "hint"}
# Model execution modes: they change how the network is traced and differentiated, never what it computes.
MODES = {"unrolled": {}, "scanned": {"scan_layers": True}, "unrolled+remat": {"remat_policy": "block"},
         "scanned+remat": {"scan_layers": True, "remat_policy": "dots"}}

# Forward parity: the largest |port - official| over the largest |official|. A float32 port reaches
# 2e-7..1.4e-6 on every golden (measured); 1e-5 leaves room for other CPUs' summation orders and is
# still far below what a wrong eps, a swapped head or a wrong padding mode changes.
FORWARD_TOL = 1e-5
LOSS_RTOL = 1e-5
EMA_DECAY = 0.999  # BasicSR's model_ema, as in the gradient goldens


def _npz(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"golden file {path} not found (tests/data of an iln_jax checkout)")
    return np.load(path)


def nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1)


def meta(name: str, folder: str = "", data_dir: Optional[Path] = None) -> dict:
    return json.loads(bytes(_npz(Path(data_dir or DATA_DIR) / folder / f"{name}.npz")["meta_json"]))


def load(name: str, data_dir: Optional[Path] = None):
    """-> (state_dict, kwargs, input NHWC, output NHWC) of the model golden ``name``. ``kwargs`` are the
    official constructor's plus the port's own options the golden was made for (``port_kwargs``, e.g.
    HINT's ``faithful``)."""
    npz = _npz(Path(data_dir or DATA_DIR) / f"{name}.npz")
    info = json.loads(bytes(npz["meta_json"]))
    sd = {k[3:]: npz[k] for k in npz.files if k.startswith("sd/")}
    kwargs = {**info["kwargs"], **info.get("port_kwargs", {})}
    return sd, kwargs, nhwc(npz["input"]), nhwc(npz["output"])


def load_extra(name: str, key: str, data_dir: Optional[Path] = None) -> np.ndarray:
    """Another array of a model golden (HINT's ``input2``, ``output2``, ``cache``, ``cache2``)."""
    value = _npz(Path(data_dir or DATA_DIR) / f"{name}.npz")[key]
    return nhwc(value) if value.ndim == 4 else value


def load_padding(name: str, data_dir: Optional[Path] = None):
    """-> (state_dict, kwargs with the port's ``padding``, input NHWC, official output NHWC)."""
    npz = _npz(Path(data_dir or DATA_DIR) / "padding" / f"{name}.npz")
    info = json.loads(bytes(npz["meta_json"]))
    sd, kwargs, _, _ = load(info["weights_from"], data_dir)
    return sd, {**kwargs, "padding": info["padding"]}, nhwc(npz["input"]), nhwc(npz["output"])


def padding_names(data_dir: Optional[Path] = None) -> list[str]:
    return sorted(p.stem for p in (Path(data_dir or DATA_DIR) / "padding").glob("*.npz"))


def converter_arch(name: str, data_dir: Optional[Path] = None) -> str:
    return CONVERT_ARCH[meta(name, data_dir=data_dir)["arch"]]


def relative_error(out, ref) -> float:
    return float(np.abs(np.asarray(out, np.float64) - ref).max() / np.abs(ref).max())


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


def load_grad(name: str, data_dir: Optional[Path] = None):
    """-> (state_dict, kwargs, input, target, loss, loss2, {"grad"|"step1"|"step2"|"ema2": {key: array}})."""
    data_dir = Path(data_dir or DATA_DIR)
    sd, kwargs, x, _ = load(name, data_dir)
    npz = _npz(data_dir / "golden_grad" / f"{name}_grad.npz")
    ref = {part: {k.split("/", 1)[1]: npz[k] for k in npz.files if k.startswith(part + "/")}
           for part in ("grad", "step1", "step2", "ema2")}
    return sd, kwargs, x, nhwc(npz["target"]), float(npz["loss"]), float(npz["loss2"]), ref


def _optim_config():
    return ml_collections.ConfigDict(dict(optimizer="adam", lr=2e-4, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0,
                                          schedule="constant", warmup_steps=0, grad_clip=0.0))


def _record_gradients() -> optax.GradientTransformation:
    """Passes the gradients on unchanged and keeps a copy of the last ones in its state."""
    return optax.GradientTransformation(init=lambda params: jax.tree.map(jnp.zeros_like, params),
                                        update=lambda updates, state, params=None: (updates, updates))


def _two_steps(module, variables, x, target):
    """This project's train_step, compiled once and run twice on the golden batch."""
    from iln_jax.train import optim
    from iln_jax.train.state import TrainState
    from iln_jax.train.step import train_step

    tx, schedule = optim.make_optimizer(_optim_config())
    tx = optax.chain(_record_gradients(), tx)
    loss_cfg = ml_collections.ConfigDict(dict(pixel="l1", charbonnier_eps=1e-9, fft_weight=0.0))

    def initial(params, model_state):  # one program: op by op, every distinct shape compiles its own
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          ema_params=jax.tree.map(jnp.copy, params), model_state=model_state,
                          rng=jax.random.key_data(jax.random.key(0)))
    state = jax.jit(initial)(variables["params"], {k: v for k, v in variables.items() if k != "params"})
    batch = jax.device_put({"lq": np.asarray(x, np.float32), "gt": np.asarray(target, np.float32)})
    step = jax.jit(lambda s, b: train_step(s, b, model=module, tx=tx, schedule=schedule, loss_cfg=loss_cfg,
                                           ema_decay=EMA_DECAY))
    state1, m1 = step(state, batch)
    state2, m2 = step(state1, batch)
    return state1.opt_state[0], state1, state2, float(m1["loss"]), float(m2["loss"])


def grad_report(name: str, mode: str = "unrolled", data_dir: Optional[Path] = None) -> dict:
    """Loss, gradients, two Adam steps and the EMA of the port against the official ones, in execution
    mode ``mode`` (:data:`MODES`), every tensor against its own scale. ``failures`` lists what is out of
    tolerance (empty: passed)."""
    arch = converter_arch(name, data_dir)
    sd, kwargs, x, target, loss0, loss2, ref = load_grad(name, data_dir)
    extra = dict(MODES[mode])
    if "drop_path_rate" in models.constructor_args(convert.arch_spec(arch).model_arch):
        extra["drop_path_rate"] = 0.0  # the goldens were made in eval mode; train_step runs train=True
    module, variables = convert.from_torch(arch, sd, **kwargs, **extra)
    build_kwargs = {**kwargs, **extra}
    grads, state1, state2, step1_loss, step2_loss = _two_steps(module, variables, x, target)
    failures = []
    losses = {"step1_loss": (step1_loss, loss0), "step2_loss": (step2_loss, loss2)}
    for what, (ours, official) in losses.items():
        if abs(ours - official) > LOSS_RTOL * abs(official):
            failures.append(f"{what} {ours:.8g}, official {official:.8g}")

    def named(params):
        return convert.to_torch(arch, {"params": params}, **build_kwargs)

    official = ref["grad"]
    ours = named(grads)
    failures += checks.gradient_failures(ours, official)
    worst_rel, worst_key = max((float(np.abs(ours[k].astype(np.float64) - g).max()) / max(float(np.abs(g).max()),
                                                                                          1e-300), k)
                               for k, g in official.items())
    for part, tree in (("step1", state1.params), ("step2", state2.params), ("ema2", state2.ema_params)):
        failures += checks.move_failures(part, named(tree), ref[part], sd, official)
    return dict(name=name, mode=mode, loss_relative_error=max(abs(a - b) / abs(b) for a, b in losses.values()),
                grad_relative_to_scale=worst_rel, grad_worst=worst_key, tensors=len(official),
                passed=not failures, failures=failures)

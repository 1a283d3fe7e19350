"""The pure training step: ``train_step(state, batch, ...) -> (state, metrics)``.

No I/O and no host randomness: the step's key is ``fold_in(state.rng, state.step)`` (and, under
pmap, the device index), so a restored state replays the same randomness. Under ``pmap`` the
gradients, the loss and (through the model's ``bn_axis_name``) BatchNorm statistics are averaged
over ``axis_name``; under ``jit`` on a mesh the global batch is one array and all of that is
global by construction.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from iln_jax.inference.precision import cast_floating
from iln_jax.train.state import TrainState

PIXEL_LOSSES = ("l1", "charbonnier", "l2")


def pixel_loss(pred: jax.Array, target: jax.Array, kind: str = "l1", *, eps: float = 1e-9) -> jax.Array:
    """Mean over all elements: L1 (BasicSR ``L1Loss``), Charbonnier (KAIR: ``sqrt(d^2 + eps)``), L2."""
    diff = pred - target
    if kind == "l1":
        return jnp.mean(jnp.abs(diff))
    if kind == "charbonnier":
        return jnp.mean(jnp.sqrt(diff * diff + eps))
    if kind == "l2":
        return jnp.mean(diff * diff)
    raise ValueError(f"Unknown loss.pixel {kind!r}; valid: {', '.join(PIXEL_LOSSES)}")


def fft_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """L1 between the real/imag parts of the 2-D FFT over H, W (HINT's ``FFTLoss``), NHWC."""
    fp = jnp.fft.fft2(pred, axes=(1, 2))
    ft = jnp.fft.fft2(target, axes=(1, 2))
    return 0.5 * (jnp.mean(jnp.abs(fp.real - ft.real)) + jnp.mean(jnp.abs(fp.imag - ft.imag)))


def restoration_loss(pred, target, loss_cfg) -> jax.Array:
    """The config's training loss (``loss.pixel``: l1, l2 or charbonnier, plus ``loss.fft_weight``
    times the FFT L1 term) between ``pred`` and ``target`` (B, H, W, C), a scalar."""
    loss = pixel_loss(pred, target, loss_cfg.pixel, eps=loss_cfg.charbonnier_eps)
    if loss_cfg.fft_weight:
        loss = loss + loss_cfg.fft_weight * fft_loss(pred, target)
    return loss


def mixup(batch: dict, key: jax.Array, *, beta: float = 1.2, use_identity: bool = True) -> dict:
    """Restormer's ``Mixing_Augment``: ``lam ~ Beta(beta, beta)`` and a random permutation of the
    batch; input and target become ``lam * x + (1 - lam) * x[perm]``. With ``use_identity`` the
    batch is left as it is half of the time (the official choice between [identity, mixup])."""
    k_apply, k_lam, k_perm = jax.random.split(key, 3)
    lam = jax.random.beta(k_lam, beta, beta)
    perm = jax.random.permutation(k_perm, batch["gt"].shape[0])
    if use_identity:
        lam = jnp.where(jax.random.bernoulli(k_apply), lam, 1.0)
    return {k: lam * v + (1.0 - lam) * v[perm] for k, v in batch.items()}


COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def train_step(state: TrainState, batch: dict, *, model: nn.Module, tx: optax.GradientTransformation,
               schedule: optax.Schedule, loss_cfg, ema_decay: float = 0.0, mixup_cfg=None,
               axis_name: Optional[str] = None, compute_dtype: str = "float32") -> tuple[TrainState, dict]:
    """One update on ``batch = {"lq": (B,h,w,C), "gt": (B,H,W,C)}`` (the local part under pmap).

    ``mixup_cfg`` (``config.mixing``) with ``mixup=True`` applies :func:`mixup` first (under pmap
    each device mixes within its own examples).

    ``compute_dtype="bfloat16"``: mixed precision. The forward and backward passes run on a
    bfloat16 copy of the parameters with the model's ``dtype`` set (norm statistics stay float32,
    see ``iln_jax.layers.norms``); the loss, the gradients (they flow back through the cast), the
    optimizer, the parameters and the EMA stay float32. bfloat16 has float32's range, so no loss
    scaling is needed.
    """
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"Unknown compute_dtype {compute_dtype!r}; valid: {', '.join(COMPUTE_DTYPES)}")
    low = COMPUTE_DTYPES[compute_dtype]
    if low is not None:
        model = model.clone(dtype=low)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    if mixup_cfg is not None and mixup_cfg.mixup:
        key, mix_key = jax.random.split(key)
        batch = mixup(batch, mix_key, beta=mixup_cfg.mixup_beta, use_identity=mixup_cfg.use_identity)
    mutable = list(state.model_state)

    def loss_fn(params):
        if low is not None:
            params = cast_floating(params, low)
        out = model.apply({"params": params, **state.model_state}, batch["lq"], train=True,
                          rngs={"dropout": key}, mutable=mutable or False)
        pred, new_model_state = out if mutable else (out, {})
        if low is not None:  # running statistics keep their float32 dtype
            new_model_state = jax.tree.map(lambda new, old: new.astype(old.dtype), dict(new_model_state),
                                           dict(state.model_state))
        return restoration_loss(pred.astype(jnp.float32), batch["gt"], loss_cfg), new_model_state

    (loss, new_model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
        grads, loss = jax.lax.pmean((grads, loss), axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    metrics = {
        "loss": loss,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(params),
        "update_norm": optax.global_norm(updates),
        "lr": jnp.asarray(schedule(state.step), jnp.float32),
    }
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
                              model_state=dict(new_model_state))
    return new_state, metrics

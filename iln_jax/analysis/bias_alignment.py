"""Bias vs. channel magnitude before the final norm (the i-LN paper's Fig. 7).

The mechanism the paper describes: a per-token LayerNorm divides every token by its own std, which
throws away the relative magnitudes of tokens that image restoration needs; a network can get them
back by putting a large *constant* into a few channels -- the token std is then dominated by those
channels, roughly the same for every token, and LN degenerates into a nearly input-independent
scaling. The constant is written by the biases of the layers that add into the residual stream,
so the channels with the largest features line up with the channels with the largest biases.

Measured here on the feature entering the final norm (the output of the last residual group),
``x`` (B, H, W, C), with E over the batch and positions:

* ``mean_c = E[x_c]``, ``energy_c = E[x_c^2]``, ``dc_share`` = sum_c mean_c^2 / sum_c energy_c:
  the fraction of the feature energy that is a constant per-channel offset;
* ``bias_c`` = the sum of the biases of the layers writing into the residual stream (``conv_first``;
  every block's attention ``proj`` and MLP ``fc2``; each group's closing ``conv``), and the final
  norm's own ``bias`` (beta) where it has one;
* ``cos_bias_mean`` = cosine(bias, mean); ``spearman_bias_rms`` = rank correlation of |bias_c|
  with sqrt(energy_c); ``topk_overlap`` = the share of the k highest-energy channels that are
  also among the k largest |bias_c| (k = max(1, C // 8)); ``topk_energy_share`` = the energy share
  of those k channels (1/8 when energy is spread evenly).

For i-LN the branch outputs, biases included, are multiplied by the per-image std, so the summed
bias is not the constant they add; the alignment numbers are still comparable between models.
"""
from __future__ import annotations

import functools
from typing import Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from iln_jax.diagnostics import capture_features, forward_order

# Leaf modules whose output is added to the residual stream of the SR shell's body.
RESIDUAL_WRITERS = ("conv_first", "proj", "fc2", "conv", "conv_4")


def residual_writer_bias(params, channels: int) -> Optional[np.ndarray]:
    """Sum of the (C,) biases of the residual-stream writers; None when there are none."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    total, found = np.zeros(channels, np.float64), False
    for path, value in flat.items():
        if path[-1] == "bias" and len(path) >= 2 and path[-2] in RESIDUAL_WRITERS and np.shape(value) == (channels,):
            total += np.asarray(value, np.float64)
            found = True
    return total if found else None


def final_norm_bias(params, channels: int) -> Optional[np.ndarray]:
    norm = flax.core.unfreeze(params).get("norm", {})
    bias = norm.get("bias") if isinstance(norm, dict) else None
    return None if bias is None or np.shape(bias) != (channels,) else np.asarray(bias, np.float64)


def _ranks(v: np.ndarray) -> np.ndarray:
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else 0.0


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def pre_norm_feature(model, variables: dict, x) -> tuple[str, jnp.ndarray]:
    """The feature entering the final norm: the last residual group's output (last block's otherwise)."""
    for level in ("groups", "blocks"):
        names = forward_order(model, variables, x, level=level)
        if names:
            feats = jax.jit(functools.partial(capture_features, model, level=level))(variables, x)
            return names[-1], feats[names[-1]]
    raise ValueError(f"{type(model).__name__}: no residual group or block was captured")


def bias_alignment(model, variables: dict, x) -> dict:
    """The Fig. 7 measurements (module docstring) plus per-channel arrays for plotting."""
    name, feat = pre_norm_feature(model, variables, x)
    f = np.asarray(jnp.asarray(feat, jnp.float32), np.float64).reshape(-1, feat.shape[-1])
    channels = f.shape[1]
    mean, energy = f.mean(0), (f ** 2).mean(0)
    rms = np.sqrt(energy)
    k = max(1, channels // 8)
    top_energy = set(np.argsort(-energy)[:k].tolist())
    out = {"feature": name, "channels": channels, "k": k,
           "dc_share": float((mean ** 2).sum() / energy.sum()) if energy.sum() > 0 else 0.0,
           "topk_energy_share": float(np.sort(energy)[::-1][:k].sum() / energy.sum()) if energy.sum() > 0 else 0.0,
           "per_channel": {"mean": mean.tolist(), "rms": rms.tolist()}}
    params = variables["params"]
    for label, bias in (("residual", residual_writer_bias(params, channels)),
                        ("final_norm", final_norm_bias(params, channels))):
        if bias is None:
            continue
        top_bias = set(np.argsort(-np.abs(bias))[:k].tolist())
        out[label] = {"cos_bias_mean": _cos(bias, mean), "spearman_bias_rms": _spearman(np.abs(bias), rms),
                      "topk_overlap": len(top_energy & top_bias) / k}
        out["per_channel"][f"{label}_bias"] = bias.tolist()
    return out

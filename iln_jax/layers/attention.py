"""Multi-head attention with a learned relative-position bias, over (possibly shifted) windows.

Layout. :func:`attend` takes and returns ``(B, nW, N, heads, d)`` arrays: the head split/merge are
free reshapes of the channel axis, and the ``xla`` implementation's move to head-major
``(B, nW, heads, N, d)`` fuses into the window partition/reverse copies. The qkv and output
projections are per token, so they are applied to the image-ordered map (before the partition and
after the reverse); with the cyclic shift folded into the same partition this leaves one gather in
and one out per attention, which XLA fuses with the neighbouring ops.

Implementations (``attention_impl``):

* ``"xla"``: hand-written ``softmax(q kᵀ + bias + mask) v``. Bias and mask stay broadcast (never
  materialised per window), logits and softmax are float32 whatever the compute dtype.
* ``"jax"``: ``jax.nn.dot_product_attention`` with JAX choosing the kernel (XLA today).
* ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")``, the fused cuDNN kernel; it
  needs a GPU, float16/bfloat16 inputs and a head width that is a multiple of 8, and fails otherwise.
* ``"auto"``: ``"cudnn"`` where those conditions hold, else ``"xla"``.

The fused kernels take the bias and mask as one ``(B·nW, heads, Nq, Nk)`` array and have no
attention dropout: use ``"xla"`` to train with ``attn_drop_rate > 0``.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from iln_jax.layers.activations import softmax
from iln_jax.layers.basic import dense, trunc_normal_init
from iln_jax.layers.rearrange import unstack
from iln_jax.layers.window import from_windows, relative_position_index, shifted_window_mask, to_windows

ATTENTION_IMPLS = ("xla", "jax", "cudnn", "auto")
_HALF = (jnp.float16, jnp.bfloat16)


def relative_position_bias(table: jnp.ndarray, index: np.ndarray) -> jnp.ndarray:
    """Gather a (T, heads) table with an (Nq, Nk) index -> (heads, Nq, Nk).

    Indices are taken modulo T: HAT's overlapping-window index has negative entries that PyTorch
    indexing wraps around, and the modulo reproduces exactly that (it is a bijection onto 0..T-1).
    """
    nq, nk = index.shape
    idx = np.mod(index, table.shape[0]).reshape(-1)
    return table[idx].reshape(nq, nk, -1).transpose(2, 0, 1)


def resolve_impl(impl: str, dtype, head_dim: int) -> str:
    """The implementation ``impl`` runs with (``"auto"`` resolved for this backend, dtype and head width)."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"Unknown attention_impl {impl!r}; valid: {', '.join(ATTENTION_IMPLS)}")
    if impl != "auto":
        return impl
    cudnn_ok = jax.default_backend() == "gpu" and dtype in _HALF and head_dim % 8 == 0
    return "cudnn" if cudnn_ok else "xla"


@jax.custom_vjp
def _add_shared_bias_cpu(logits, bias):
    return logits + bias


def _add_shared_bias_cpu_fwd(logits, bias):
    return logits + bias, None


def _add_shared_bias_cpu_bwd(_, dlogits):
    # The bias gradient sums dlogits over every window of the batch. XLA:CPU reduces over leading
    # axes of a large array slowly; the same sum as a matrix-vector product is an order of magnitude
    # faster at HAT's sizes (docs/design_measurements.md).
    shared = dlogits.shape[dlogits.ndim - 3:]
    rows = dlogits.reshape(-1, int(np.prod(shared)))
    dbias = (jnp.ones((1, rows.shape[0]), rows.dtype) @ rows).reshape(shared)
    return dlogits, dbias


_add_shared_bias_cpu.defvjp(_add_shared_bias_cpu_fwd, _add_shared_bias_cpu_bwd)


def add_shared_bias(logits: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """``logits (..., heads, Nq, Nk) + bias (heads, Nq, Nk)``, the bias shared by all leading axes."""
    if jax.default_backend() == "cpu" and bias.ndim == 3 and logits.ndim > 3:
        return _add_shared_bias_cpu(logits, bias.astype(logits.dtype))
    return logits + bias.astype(logits.dtype)


def attend(q, k, v, *, bias=None, mask=None, scale: float = 1.0, dropout: Optional[nn.Dropout] = None,
           impl: str = "xla"):
    """Windowed attention on ``q (B, nW, Nq, heads, d)``, ``k, v (B, nW, Nk, heads, d)``.

    ``bias`` is (heads, Nq, Nk), shared by all windows; ``mask`` is (nW, Nq, Nk), one per window
    (shared by the batch). ``scale`` multiplies the logits. Returns (B, nW, Nq, heads, d).
    """
    impl = resolve_impl(impl, q.dtype, q.shape[-1])
    dropout_active = dropout is not None and dropout.rate > 0 and not dropout.deterministic
    if impl == "xla":
        # Head-major operands, (B, nW, heads, N, d): each (window, head) matrix is contiguous, so the
        # batched matmuls read plain row-major blocks and the head moves fuse into the window
        # partition/reverse copies. Token-major einsums left XLA:CPU transposing inside the dots
        # (docs/design_measurements.md).
        q, k, v = (jnp.swapaxes(t, 2, 3) for t in (q, k, v))
        logits = jnp.einsum("bwhqd,bwhkd->bwhqk", q, k, preferred_element_type=jnp.float32) * scale
        if bias is not None:
            logits = add_shared_bias(logits, bias)
        if mask is not None:
            logits = logits + mask.astype(jnp.float32)[None, :, None]
        probs = softmax(logits, axis=-1).astype(v.dtype)
        if dropout is not None:
            probs = dropout(probs)
        return jnp.swapaxes(jnp.einsum("bwhqk,bwhkd->bwhqd", probs, v), 2, 3)
    if dropout_active:
        raise ValueError(f"attention_impl={impl!r} has no attention dropout; use 'xla' with attn_drop_rate > 0")
    b, nw, nq, heads, d = q.shape
    full_bias = None
    if bias is not None or mask is not None:
        full_bias = jnp.zeros((1, 1, 1, 1, 1), jnp.float32)
        if bias is not None:
            full_bias = full_bias + bias.astype(jnp.float32)[None, None]
        if mask is not None:
            full_bias = full_bias + mask.astype(jnp.float32)[None, :, None]
        full_bias = jnp.broadcast_to(full_bias, (b, nw, heads, nq, k.shape[2]))
        full_bias = full_bias.reshape(b * nw, heads, nq, k.shape[2]).astype(q.dtype)
    flat = lambda t: t.reshape(b * nw, t.shape[2], heads, d)  # noqa: E731  BTNH
    out = jax.nn.dot_product_attention(flat(q), flat(k), flat(v), bias=full_bias, scale=scale,
                                       implementation=None if impl == "jax" else "cudnn")
    return out.reshape(b, nw, nq, heads, d)


def split_qkv(windows: jnp.ndarray, num_heads: int) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(B, nW, N, 3C) with channels ordered (q|k|v, head, d) -> three (B, nW, N, heads, d)."""
    b, nw, n, c3 = windows.shape
    qkv = windows.reshape(b, nw, n, 3, num_heads, c3 // (3 * num_heads))
    return unstack(qkv, axis=3)


class WindowAttention(nn.Module):
    """Swin (shifted-)window attention on an NHWC map (parameter names as the official ``attn``).

    The official module takes already partitioned windows; taking the map lets the per-token
    projections run outside the partition (same values, less data movement).
    """

    dim: int
    num_heads: int
    window_size: int
    shift_size: int = 0
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    deterministic: bool = True
    attention_impl: str = "xla"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        ws, heads, shift = self.window_size, self.num_heads, self.shift_size
        b, h, w, c = x.shape
        head_dim = self.dim // heads
        table = self.param("relative_position_bias_table", trunc_normal_init, ((2 * ws - 1) ** 2, heads))
        qkv = dense(3 * self.dim, use_bias=self.qkv_bias, name="qkv")(x)
        q, k, v = split_qkv(to_windows(qkv, ws, shift), heads)
        bias = relative_position_bias(table, relative_position_index(ws))
        mask = shifted_window_mask(h, w, ws, shift) if shift else None
        out = attend(q, k, v, bias=bias, mask=mask, scale=self.qk_scale or head_dim ** -0.5,
                     dropout=nn.Dropout(self.attn_drop, deterministic=self.deterministic),
                     impl=self.attention_impl)
        out = from_windows(out.reshape(*out.shape[:3], self.dim), ws, h, w, shift)
        out = dense(self.dim, name="proj")(out)
        return nn.Dropout(self.proj_drop, deterministic=self.deterministic)(out)

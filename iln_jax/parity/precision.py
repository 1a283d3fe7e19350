"""Full float32 precision in both frameworks, for comparing the port with the official PyTorch code.

On NVIDIA GPUs from Ampere on, JAX multiplies float32 matrices (dots and convolutions) in TF32 by
default (``jax_default_matmul_precision`` unset: 10-bit mantissas in the products), and TPUs in
bfloat16 passes; PyTorch keeps float32 matmuls exact (``torch.backends.cuda.matmul.allow_tf32 =
False``) but runs cuDNN convolutions in TF32 (``torch.backends.cudnn.allow_tf32 = True``). A
forward pass of a port then differs from the official one by ~1e-3 relative instead of the ~1e-6 of
float32 round-off, and a golden check at 1e-4 fails for reasons that are not the port's. The parity
setting makes both exact: JAX's default matmul precision ``"highest"``, PyTorch's TF32 off for
matmuls and convolutions. On the CPU it changes nothing (both are exact there already).

* :func:`full_precision` -- a context manager: the setting for what runs (for JAX: what is *traced*)
  inside it, the previous one restored after.
* :func:`set_parity_precision` -- the same for the rest of the process (test sessions, comparison CLIs).
* :func:`precision_settings` -- what is in force now, for reports.

PyTorch's flags are set only when ``torch`` is already imported, so that JAX-only programs do not
pay for importing it; call these after ``import torch``.
"""
from __future__ import annotations

import contextlib
import sys

import jax

PARITY_MATMUL_PRECISION = "highest"
_TORCH_FLAGS = (("cuda", "matmul", "allow_tf32"), ("cudnn", "allow_tf32"))


def _torch():
    return sys.modules.get("torch")


def _torch_flag_owner(torch, path):
    owner = torch.backends
    for name in path[:-1]:
        owner = getattr(owner, name)
    return owner


def _torch_flags(torch) -> dict:
    return {".".join(p): bool(getattr(_torch_flag_owner(torch, p), p[-1])) for p in _TORCH_FLAGS}


def _set_torch_flags(torch, values: dict) -> None:
    for p in _TORCH_FLAGS:
        setattr(_torch_flag_owner(torch, p), p[-1], values[".".join(p)])


def set_parity_precision() -> None:
    """Full float32 precision for the rest of the process: JAX's default matmul precision
    ``"highest"`` and, if ``torch`` is imported, PyTorch's TF32 off."""
    jax.config.update("jax_default_matmul_precision", PARITY_MATMUL_PRECISION)
    torch = _torch()
    if torch is not None:
        _set_torch_flags(torch, {".".join(p): False for p in _TORCH_FLAGS})


@contextlib.contextmanager
def full_precision():
    """Full float32 precision inside the block (JAX: for what is traced inside it), restored after."""
    torch = _torch()
    saved = _torch_flags(torch) if torch is not None else None
    with jax.default_matmul_precision(PARITY_MATMUL_PRECISION):
        if torch is not None:
            _set_torch_flags(torch, {k: False for k in saved})
        try:
            yield
        finally:
            if torch is not None:
                _set_torch_flags(torch, saved)


def precision_settings() -> dict:
    """The precision settings in force: JAX's default matmul precision (None: the backend's default,
    TF32 on Ampere+ GPUs) and PyTorch's TF32 flags when torch is imported."""
    out = {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision}
    torch = _torch()
    if torch is not None:
        out["torch"] = _torch_flags(torch)
    return out

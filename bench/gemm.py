"""The machine's measured matmul peak: one large square matrix product, timed in JAX and in PyTorch.

The step's achieved FLOP/s over this number is its distance to what the machine can do at all (the
roofline's compute roof as measured, not as a datasheet says). JAX's product is compiled with the
project's per-backend options (``iln_jax.xla_options.tuned``), as the train step is.
"""
from __future__ import annotations

import time
from typing import Optional


def _best_seconds(call, sync, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        sync(call())
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        sync(call())
        best = min(best, time.perf_counter() - t)
    return best


def jax_gemm(n: int, dtype: str = "float32", *, reps: int = 3, warmup: int = 1,
             precision: Optional[str] = None) -> dict:
    """Best of ``reps`` products of two ``n x n`` matrices in JAX on its default device; ``precision``:
    the matmul precision traced with (None: JAX's default, TF32 on Ampere+ GPUs for float32)."""
    import jax
    import jax.numpy as jnp
    from iln_jax import xla_options
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    with jax.default_matmul_precision(precision):
        product = jax.jit(lambda a, b: a @ b).lower(a, b).compile(xla_options.tuned())
    seconds = _best_seconds(lambda: product(a, b), jax.block_until_ready, reps, warmup)
    return dict(framework="jax", n=n, dtype=dtype, precision=precision or "default", seconds=seconds,
                gflops_per_s=2 * n ** 3 / seconds / 1e9)


def torch_gemm(n: int, dtype: str = "float32", *, reps: int = 3, warmup: int = 1) -> dict:
    """Best of ``reps`` products of two ``n x n`` matrices in PyTorch (CUDA when it sees a GPU), at
    its current TF32 setting (``torch.backends.cuda.matmul.allow_tf32``, off by default)."""
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=getattr(torch, dtype))
    sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)
    seconds = _best_seconds(lambda: torch.mm(a, b), sync, reps, warmup)
    tf32 = device == "cuda" and dtype == "float32" and torch.backends.cuda.matmul.allow_tf32
    return dict(framework=f"torch ({device})", n=n, dtype=dtype, precision="tf32" if tf32 else "default",
                seconds=seconds, gflops_per_s=2 * n ** 3 / seconds / 1e9, threads=torch.get_num_threads())

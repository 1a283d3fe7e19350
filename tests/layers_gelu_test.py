"""basic.gelu is torch.nn.GELU() (exact erf form): values and gradients, float32 and bfloat16."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax.layers.basic import gelu

torch = pytest.importorskip("torch")


def _points():
    # Both tails (where 1 + erf cancels: float32 round-off differs absolutely by ~1e-6 there) and the middle.
    return np.concatenate([np.linspace(-12, 12, 2001), np.random.default_rng(0).standard_normal(4000) * 3]).astype(np.float32)


def test_values_and_gradient_match_torch():
    x = _points()
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.GELU()(tx)
    ty.sum().backward()
    y, vjp = jax.vjp(gelu, jnp.asarray(x))
    (dx,) = vjp(jnp.ones_like(y))
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy(), rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(np.asarray(dx), tx.grad.numpy(), rtol=1e-5, atol=2e-6)


def test_matches_jax_exact_gelu_and_keeps_dtype():
    x = jnp.asarray(_points())
    np.testing.assert_allclose(np.asarray(gelu(x)), np.asarray(jax.nn.gelu(x, approximate=False)), rtol=1e-6, atol=1e-6)
    half = gelu(x.astype(jnp.bfloat16))
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), np.asarray(gelu(x)), rtol=2e-2, atol=2e-2)

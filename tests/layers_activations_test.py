"""layers.activations: gelu is torch.nn.GELU() (exact erf form) and softmax is jax.nn.softmax, in
values and gradients, float32 and bfloat16; each keeps one tensor for its backward, as PyTorch does."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

from iln_jax.layers.activations import gelu, softmax

torch = pytest.importorskip("torch")


def _points():
    # Both tails (where 1 + erf cancels: float32 round-off differs absolutely by ~1e-6 there) and the middle.
    return np.concatenate([np.linspace(-12, 12, 2001), np.random.default_rng(0).standard_normal(4000) * 3]).astype(np.float32)


def _full_size_residuals(f, x, *more):
    return [aval.shape for aval, _ in saved_residuals(f, x, *more) if aval.shape == x.shape]


def test_gelu_values_and_gradient_match_torch():
    x = _points()
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.GELU()(tx)
    ty.sum().backward()
    y, vjp = jax.vjp(gelu, jnp.asarray(x))
    (dx,) = vjp(jnp.ones_like(y))
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy(), rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(np.asarray(dx), tx.grad.numpy(), rtol=1e-5, atol=2e-6)


def test_gelu_gradient_equals_autodiff_of_the_formula():
    x = jnp.asarray(_points())
    formula = lambda t: 0.5 * t * (1.0 + jax.lax.erf(t / np.sqrt(2).astype(np.float32)))  # noqa: E731
    w = jnp.cos(x)
    ours = jax.grad(lambda t: jnp.sum(gelu(t) * w))(x)
    theirs = jax.grad(lambda t: jnp.sum(formula(t) * w))(x)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-6)


def test_gelu_matches_jax_exact_gelu_and_keeps_dtype():
    x = jnp.asarray(_points())
    np.testing.assert_allclose(np.asarray(gelu(x)), np.asarray(jax.nn.gelu(x, approximate=False)), rtol=1e-6, atol=1e-6)
    half = gelu(x.astype(jnp.bfloat16))
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), np.asarray(gelu(x)), rtol=2e-2, atol=2e-2)
    dx = jax.grad(lambda t: jnp.sum(gelu(t).astype(jnp.float32)))(x.astype(jnp.bfloat16))
    assert dx.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(dx, np.float32), np.asarray(jax.grad(lambda t: jnp.sum(gelu(t)))(x)),
                               rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_softmax_values_and_gradients_equal_jax_nn_softmax(axis):
    x = jnp.asarray(np.random.default_rng(1).standard_normal((5, 7, 9)) * 4, jnp.float32)
    x = x.at[0, 0].add(-100.0)  # a masked position, as the shifted windows' mask makes them
    w = jnp.asarray(np.random.default_rng(2).standard_normal(x.shape), jnp.float32)
    np.testing.assert_array_equal(np.asarray(softmax(x, axis)), np.asarray(jax.nn.softmax(x, axis=axis)))
    ours = jax.grad(lambda t: jnp.sum(softmax(t, axis) * w))(x)
    theirs = jax.grad(lambda t: jnp.sum(jax.nn.softmax(t, axis=axis) * w))(x)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)


def test_softmax_gradient_matches_torch():
    x = np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32) * 3
    w = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    (torch.softmax(tx, -1) * torch.tensor(w)).sum().backward()
    dx = jax.grad(lambda t: jnp.sum(softmax(t, -1) * w))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(dx), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_each_keeps_one_full_size_tensor_for_the_backward():
    x = jnp.ones((8, 16, 32), jnp.float32)
    assert len(_full_size_residuals(lambda t: jnp.sum(gelu(t) ** 2), x)) == 2  # gelu's input, and gelu(t) for **2
    # Attention: the probabilities feed a matmul, whose backward needs them anyway. Autodiff of
    # jax.nn.softmax keeps the exponentials besides.
    v = jnp.ones((32, 4), jnp.float32)
    assert len(_full_size_residuals(lambda t, u: jnp.sum(softmax(t) @ u), x, v)) == 1
    assert len(_full_size_residuals(lambda t, u: jnp.sum(jax.nn.softmax(t) @ u), x, v)) == 2


def test_under_jit_vmap_and_remat():
    x = jnp.asarray(np.random.default_rng(5).standard_normal((3, 6, 10)), jnp.float32)
    f = lambda t: jnp.sum(softmax(gelu(t), -1) ** 2)  # noqa: E731
    want = jax.grad(f)(x)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(f))(x)), np.asarray(want), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(jax.grad(jax.checkpoint(f))(x)), np.asarray(want), rtol=1e-6, atol=1e-7)
    per_row = jax.vmap(jax.grad(f))(x)
    np.testing.assert_allclose(np.asarray(per_row), np.asarray(want), rtol=1e-6, atol=1e-7)

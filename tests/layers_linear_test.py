"""iln_jax.layers.linear: the CPU gradient (tokens flattened, plain 2-D products) is autodiff's, for any
leading rank, with and without bias; in bfloat16 it is within bfloat16's rounding of the float32 gradient
(its sums round differently from autodiff's); Linear's parameters are nn.Dense's."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax.layers import linear as linear_lib


@pytest.mark.parametrize("lead", [(7,), (2, 5, 3), (2, 3, 4, 5)], ids=["2d", "4d", "windows"])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)], ids=["f32", "bf16"])
def test_gradient_equals_autodiff(lead, use_bias, dtype, tol):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((*lead, 6)), dtype)
    kernel = jnp.asarray(rng.standard_normal((6, 9)), dtype)
    bias = jnp.asarray(rng.standard_normal((9,)), dtype) if use_bias else None
    weight = jnp.asarray(rng.standard_normal((*lead, 9)), jnp.float32)

    def loss(fn, x, kernel, bias):
        return jnp.sum(fn(x, kernel, bias).astype(jnp.float32) * weight)

    def reference(x, kernel, bias):
        return x @ kernel if bias is None else x @ kernel + bias

    args = (x, kernel, bias)
    argnums = (0, 1, 2) if use_bias else (0, 1)
    as_f32 = [None if a is None else a.astype(jnp.float32) for a in args]
    got = jax.jit(jax.grad(lambda *a: loss(linear_lib.linear, *a), argnums))(*args)
    want = jax.jit(jax.grad(lambda *a: loss(reference, *a), argnums))(*as_f32)
    np.testing.assert_allclose(linear_lib.linear(*args).astype(jnp.float32), reference(*as_f32),
                               rtol=tol, atol=tol * 10)
    for g, w, a, name in zip(got, want, args, ("x", "kernel", "bias")):
        assert g.dtype == a.dtype and g.shape == w.shape, name
        np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=tol, atol=tol * float(jnp.max(jnp.abs(w))),
                                   err_msg=name)


def test_parameters_and_values_are_dense():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4, 5)), jnp.float32)
    variables = nn.Dense(3).init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, linear_lib.Linear(3).init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)
    np.testing.assert_allclose(linear_lib.Linear(3).apply(variables, x), nn.Dense(3).apply(variables, x),
                               rtol=1e-6, atol=1e-6)

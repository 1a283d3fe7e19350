"""rearrange.split / unstack / roll: the values and gradients of jnp.split / indexing / jnp.roll,
exactly, with gradients that are one concatenation or one opposite roll (no zero-padded pieces)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax.layers.rearrange import roll, split, unstack

X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 6, 12)), jnp.float32)


def _primitives(fn, *args) -> set:
    return {str(e.primitive) for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


@pytest.mark.parametrize("sections", [3, [3], [4, 4, 9], [0, 12]])
def test_split_equals_jnp_split_in_values_and_gradients(sections):
    ours, ref = split(X, sections, axis=-1), jnp.split(X, sections, axis=-1)
    assert len(ours) == len(ref) and all(np.array_equal(a, b) for a, b in zip(ours, ref))
    weights = [jnp.cos(jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape)) for p in ref]

    def loss(f):
        return lambda x: sum(jnp.sum(p * w) for p, w in zip(f(x), weights))

    grad = jax.grad(loss(lambda x: split(x, sections, axis=-1)))
    np.testing.assert_array_equal(grad(X), jax.grad(loss(lambda x: jnp.split(x, sections, axis=-1)))(X))
    assert "pad" not in _primitives(grad, X) and "concatenate" in _primitives(grad, X)


def test_split_of_a_middle_axis_with_an_unused_part():
    x9 = jnp.concatenate([X, X[:, :, :3]], axis=2)  # 9 rows on axis 2
    q, k, v = split(x9, 3, axis=-2)  # axis 2, given from the end
    ref = jnp.split(x9, 3, axis=2)
    assert all(np.array_equal(a, b) for a, b in zip((q, k, v), ref))
    g = jax.grad(lambda x: jnp.sum(split(x, 3, axis=2)[0] ** 2))(x9)  # k, v unused: zero gradients
    np.testing.assert_array_equal(g, jax.grad(lambda x: jnp.sum(jnp.split(x, 3, axis=2)[0] ** 2))(x9))


def test_unstack_equals_indexing_in_values_and_gradients():
    x = X.reshape(2, 5, 6, 3, 4)
    parts = unstack(x, axis=3)
    assert len(parts) == 3 and all(np.array_equal(p, x[:, :, :, i]) for i, p in enumerate(parts))

    def loss(f):
        return lambda x: sum(jnp.sum(jnp.sin(p) * (i + 1)) for i, p in enumerate(f(x)))

    grad = jax.grad(loss(lambda x: unstack(x, 3)))
    ref = jax.grad(loss(lambda x: [x[:, :, :, i] for i in range(3)]))
    np.testing.assert_array_equal(grad(x), ref(x))
    assert "pad" not in _primitives(grad, x)


@pytest.mark.parametrize("shifts", [(-2, -3), (2, 3), (0, 4), (7, -8)])
def test_roll_equals_jnp_roll_in_values_and_gradients(shifts):
    np.testing.assert_array_equal(roll(X, shifts, (1, 2)), jnp.roll(X, shifts, axis=(1, 2)))
    w = jnp.cos(jnp.arange(X.size, dtype=jnp.float32).reshape(X.shape))
    grad = jax.grad(lambda x: jnp.sum(roll(x, shifts, (1, -2)) * w))
    np.testing.assert_array_equal(grad(X), jax.grad(lambda x: jnp.sum(jnp.roll(x, shifts, axis=(1, 2)) * w))(X))
    assert "pad" not in _primitives(grad, X)


def test_bad_sections_are_refused_with_the_sizes():
    with pytest.raises(ValueError, match="cannot split an axis of 12 into 5 equal parts"):
        split(X, 5)
    with pytest.raises(ValueError, match="not increasing"):
        split(X, [6, 3])


def test_composes_with_jit_vmap_and_remat():
    f = jax.jit(jax.grad(lambda x: jnp.sum(jax.checkpoint(lambda y: roll(split(y, 3)[1], (1,), (1,)))(x) ** 2)))
    ref = jax.grad(lambda x: jnp.sum(jnp.roll(jnp.split(x, 3, axis=-1)[1], 1, axis=1) ** 2))
    np.testing.assert_allclose(f(X), ref(X), rtol=0, atol=0)
    batched = jax.vmap(lambda x: jnp.stack(unstack(x, 0)))(X)
    np.testing.assert_array_equal(batched, X)

"""The norm grid against NumPy references, and the properties the i-LN study relies on."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax.layers import norm_registry, norms
from iln_jax.layers.swin import SwinBlock

RNG = np.random.default_rng(0)
X = (RNG.normal(size=(3, 4, 6, 6)) * np.arange(1, 7) + 2.0).astype(np.float32)  # (B, H, W, C)


def _apply(name, x, slot="branch", train=False, variables=None):
    module = getattr(norm_registry.make_norm(name, train=train), slot)()
    if variables is None:
        variables = module.init(jax.random.key(0), x)
    (y, scale), _ = module.apply(variables, x, mutable=["batch_stats"])
    return np.asarray(y), scale, variables


def _np_standardize(x, axes, eps):
    mean = x.astype(np.float64).mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps), var


@pytest.mark.parametrize("name, axes, eps", [
    ("layernorm", (3,), 1e-5),
    ("layerscale", (3,), 1e-5),
    ("instancenorm", (1, 2), 1e-5),
    ("ln_star", (1, 2, 3), 1e-4),
    ("iln", (1, 2, 3), 1e-4),
])
def test_standardizing_norms_match_numpy(name, axes, eps):
    y, _, _ = _apply(name, X)
    ref, _ = _np_standardize(X, axes, eps)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_rmsnorm_matches_numpy():
    y, scale, _ = _apply("rmsnorm", X)
    ref = X / np.sqrt((X.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    assert scale == 1.0


def test_iln_branch_scale_is_the_input_std_per_image():
    _, scale, _ = _apply("iln", X)
    _, var = _np_standardize(X, (1, 2, 3), 1e-4)
    assert scale.shape == (3, 1, 1, 1)
    np.testing.assert_allclose(np.asarray(scale), np.sqrt(var + 1e-4), rtol=1e-6)


def test_iln_outer_slot_is_a_plain_affine():
    y, scale, variables = _apply("iln", X, slot="outer")
    assert set(variables["params"]) == {"scale", "bias"}
    np.testing.assert_array_equal(y, X)
    assert scale == 1.0


def test_batchnorm_uses_batch_statistics_in_training_and_running_ones_in_eval():
    y_train, _, variables = _apply("batchnorm", X, train=True)
    ref, var = _np_standardize(X, (0, 1, 2), 1e-5)
    np.testing.assert_allclose(y_train, ref, rtol=1e-4, atol=1e-5)
    module = norm_registry.make_norm("batchnorm", train=True).branch()
    _, updated = module.apply(variables, X, mutable=["batch_stats"])
    n = X.size // X.shape[-1]
    np.testing.assert_allclose(updated["batch_stats"]["mean"], 0.1 * X.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(updated["batch_stats"]["var"], 0.9 + 0.1 * var.ravel() * n / (n - 1), rtol=1e-5)
    y_eval, _, _ = _apply("batchnorm", X, train=False, variables={**variables, **updated})
    stats = updated["batch_stats"]
    np.testing.assert_allclose(y_eval, (X - stats["mean"]) / np.sqrt(stats["var"] + 1e-5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in norms.NORMS if n != "batchnorm"])
@pytest.mark.parametrize("slot", ["branch", "outer"])
def test_an_images_output_does_not_depend_on_the_rest_of_the_batch(name, slot):
    y_batch, s_batch, variables = _apply(name, X, slot)
    y_alone, s_alone, _ = _apply(name, X[1:2], slot, variables=variables)
    np.testing.assert_allclose(y_batch[1:2], y_alone, rtol=1e-6, atol=1e-6)
    if np.ndim(s_batch) == 4:
        np.testing.assert_allclose(np.asarray(s_batch)[1:2], s_alone, rtol=1e-6)


def test_batchnorm_output_does_depend_on_the_batch():
    y_batch, _, variables = _apply("batchnorm", X, train=True)
    y_alone, _, _ = _apply("batchnorm", X[1:2], train=True, variables=variables)
    assert np.abs(y_batch[1:2] - y_alone).max() > 1e-2


def test_layerscale_and_rezero_start_small():
    _, scale, _ = _apply("layerscale", X)
    np.testing.assert_array_equal(np.asarray(scale), np.full(6, norms.LAYERSCALE_INIT, np.float32))
    y, scale, _ = _apply("rezero", X)
    np.testing.assert_array_equal(y, X)
    assert float(scale) == 0.0


def _swin_block(norm):
    return SwinBlock(dim=6, num_heads=2, window_size=2, shift_size=1, norm=norm)


def test_rezero_block_is_the_identity_at_init():
    block = _swin_block(norm_registry.make_norm("rezero").branch)
    variables = block.init(jax.random.key(0), X)
    np.testing.assert_array_equal(np.asarray(block.apply(variables, X)), X)


def test_block_norm_sees_the_whole_image_not_a_window():
    block = _swin_block(norm_registry.make_norm("iln").branch)
    variables = block.init(jax.random.key(0), X)
    _, captured = block.apply(variables, X, capture_intermediates=True, mutable=["intermediates"])
    y, scale = captured["intermediates"]["norm1"]["__call__"][0]
    assert y.shape == X.shape and scale.shape == (3, 1, 1, 1)
    _, var = _np_standardize(X, (1, 2, 3), 1e-4)
    np.testing.assert_allclose(np.asarray(scale), np.sqrt(var + 1e-4), rtol=1e-6)


def test_unknown_norm_lists_the_valid_names():
    with pytest.raises(ValueError, match="valid norms: layernorm, rmsnorm.*iln"):
        norm_registry.make_norm("groupnorm")


@pytest.mark.parametrize("name", norms.NORMS)
def test_every_norm_jits(name):
    module = norm_registry.make_norm(name, train=True).branch()
    variables = module.init(jax.random.key(0), X)
    f = jax.jit(functools.partial(module.apply, mutable=["batch_stats"]))
    (y, _), _ = f(variables, jnp.asarray(X))
    assert y.shape == X.shape and np.isfinite(np.asarray(y)).all()

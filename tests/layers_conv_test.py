"""iln_jax.layers.conv: every per-backend formulation is XLA's convolution (values and gradients), its
parameters are nn.Conv's, and inside a scanned loop XLA:CPU is left only canonical convolutions."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax.layers import conv as conv_lib
from iln_jax.layers.basic import torch_default_kernel_init

# (spatial shape, in, out, kernel size, groups, padding per side); every CPU path and the fallback.
CASES = {
    "dense3x3": ((9, 7), 5, 4, 3, 1, 1),
    "dense3x3_rgb": ((8, 8), 3, 6, 3, 1, 1),
    "dense5x5_valid": ((9, 8), 4, 3, 5, 1, 0),
    "pointwise": ((6, 5), 6, 9, 1, 1, 0),
    "depthwise": ((7, 9), 6, 6, 3, 6, 1),
    "grouped": ((6, 6), 6, 4, 3, 2, 1),  # neither dense nor depthwise: XLA's own conv
    "depthwise_multiplier": ((6, 6), 3, 6, 3, 3, 1),
    "conv1d_pointwise": ((11,), 5, 7, 1, 1, 0),
}


def _inputs(case, seed=0):
    spatial, c_in, c_out, k, groups, pad = CASES[case]
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, *spatial, c_in)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((*(k,) * len(spatial), c_in // groups, c_out)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal((c_out,)), jnp.float32)
    padding = ((pad, pad),) * len(spatial)
    out_spatial = tuple(n + 2 * pad - k + 1 for n in spatial)
    target = jnp.asarray(rng.standard_normal((2, *out_spatial, c_out)), jnp.float32)
    return x, kernel, bias, padding, groups, target


def _reference(x, kernel, bias, padding, groups):
    dims = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[len(padding)]
    y = jax.lax.conv_general_dilated(x, kernel, (1,) * len(padding), padding, dimension_numbers=dims,
                                     feature_group_count=groups, precision=jax.lax.Precision.HIGHEST)
    return y + bias


@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_equal_xla_convolution(case):
    x, kernel, bias, padding, groups, target = _inputs(case)

    def loss(conv_fn):
        return lambda x, k, b: jnp.sum(conv_fn(x, k, b) * target) + jnp.sum(conv_fn(x, k, b) ** 2)

    ours = lambda x, k, b: conv_lib.conv(x, k, b, padding=padding, groups=groups)
    ref = lambda x, k, b: _reference(x, k, b, padding, groups)
    np.testing.assert_allclose(jax.jit(ours)(x, kernel, bias), ref(x, kernel, bias), rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(loss(ours), (0, 1, 2)))(x, kernel, bias)
    want = jax.grad(loss(ref), (0, 1, 2))(x, kernel, bias)
    for name, g, w in zip(("input", "kernel", "bias"), got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4 * float(jnp.max(jnp.abs(w))), err_msg=name)


@pytest.mark.parametrize("case", ["dense3x3", "depthwise", "pointwise"])
def test_gradients_inside_a_scan_equal_the_unrolled_loop(case):
    x, kernel, bias, padding, groups, _ = _inputs(case)
    c = x.shape[-1]  # a repeated layer keeps its channel count
    rng = np.random.default_rng(1)
    kernels = jnp.asarray(rng.standard_normal((2, *kernel.shape[:-2], c // groups, c)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal((c,)), jnp.float32)
    layer = lambda h, k: jnp.tanh(conv_lib.conv(h, k, bias, padding=padding, groups=groups))

    def scanned(ks, x):
        return jnp.sum(jax.lax.scan(lambda h, k: (layer(h, k), None), x, ks)[0] ** 2)

    def unrolled(ks, x):
        return jnp.sum(layer(layer(x, ks[0]), ks[1]) ** 2)

    got = jax.jit(jax.grad(scanned, (0, 1)))(kernels, x)
    want = jax.jit(jax.grad(unrolled, (0, 1)))(kernels, x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(w))))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU formulation")
def test_a_scanned_loop_keeps_only_canonical_convolutions_on_cpu():
    # XLA:CPU canonicalises convolutions at the top level only; one left non-canonical inside the
    # loop body runs as a naive loop (~100x slower). Depthwise ones are not convolutions at all.
    x, kernel, bias, padding, _, _ = _inputs("dense3x3")
    kernel = jnp.stack([jnp.ones((3, 3, 5, 5)), jnp.ones((3, 3, 5, 5))])
    depthwise = jnp.ones((2, 3, 3, 1, 5))

    def loss(ks, dws, x):
        def body(h, k):
            h = conv_lib.conv(h, k[0], padding=padding)
            return conv_lib.conv(h, k[1], padding=padding, groups=5), None
        return jnp.sum(jax.lax.scan(body, x, (ks, dws))[0] ** 2)

    hlo = jax.jit(jax.grad(loss, (0, 1))).lower(kernel, depthwise, x).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=([\w>-]+)", hlo)
    assert len(labels) == 3, labels  # forward, input gradient, weight gradient of the dense conv
    assert set(labels) == {"b01f_01io->b01f"}, labels


def test_parameters_and_initial_values_are_nn_conv_s():
    x = jnp.ones((1, 6, 6, 4))
    for groups, k in [(1, 3), (4, 3), (1, 1)]:
        kwargs = dict(padding=((k // 2, k // 2),) * 2, feature_group_count=groups, kernel_init=torch_default_kernel_init)
        ours = conv_lib.Conv(4, (k, k), **kwargs).init(jax.random.key(3), x)
        theirs = nn.Conv(4, (k, k), **kwargs).init(jax.random.key(3), x)
        assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, theirs)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", ["dense3x3", "depthwise", "pointwise"])
def test_low_precision_keeps_its_dtype_and_accuracy(case):
    x, kernel, bias, padding, groups, _ = _inputs(case)
    layer = conv_lib.Conv(kernel.shape[-1], kernel.shape[:-2], padding=padding, feature_group_count=groups,
                          dtype=jnp.bfloat16)
    variables = {"params": {"kernel": kernel, "bias": bias}}
    y = layer.apply(variables, x)
    assert y.dtype == jnp.bfloat16
    want = _reference(x, kernel, bias, padding, groups)
    assert float(jnp.max(jnp.abs(y.astype(jnp.float32) - want))) <= 0.05 * float(jnp.max(jnp.abs(want)))


def test_indivisible_groups_name_the_layer():
    with pytest.raises(ValueError, match="bad_conv: 5 input and 4 output channels .* feature_group_count=2"):
        conv_lib.Conv(4, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=2, name="bad_conv").init(
            jax.random.key(0), jnp.ones((1, 4, 4, 5)))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU formulation")
def test_depthwise_gradient_plans_no_more_memory_than_xla_s_convolution():
    # The weight gradient reduces one shifted window at a time; all k*k of them alive at once
    # would plan ~9 input-sized buffers instead of ~3.
    x, kernel = jnp.zeros((2, 32, 32, 16)), jnp.zeros((3, 3, 1, 16))
    padding = ((1, 1), (1, 1))

    def planned_temp(conv_fn):
        grad = jax.jit(jax.grad(lambda x, k: jnp.sum(conv_fn(x, k) ** 2), (0, 1)))
        return grad.lower(x, kernel).compile().memory_analysis().temp_size_in_bytes

    ours = planned_temp(lambda x, k: conv_lib.conv(x, k, padding=padding, groups=16))
    xla = planned_temp(lambda x, k: _reference(x, k, 0.0, padding, 16))
    assert ours <= 1.5 * xla, (ours, xla)

"""Low precision: fp16 / bf16 features really are fp16 / bf16, weight quantization, non-finite counts."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax import models
from iln_jax import diagnostics
from iln_jax.evaluation import tasks
from iln_jax.evaluation.precision import format_report, precision_report
from iln_jax.inference import precision


@pytest.fixture(scope="module")
def tiny():
    module = models.create("swinir", norm="layernorm", img_size=8, window_size=4, depths=(2,), num_heads=(2,),
                           embed_dim=8, mlp_ratio=2, upsampler="pixelshuffledirect", upscale=2)
    return module, jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_fake_quantize_is_per_output_channel_on_the_integer_grid():
    w = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32) * np.arange(1, 6)
    for bits in (8, 4):
        q = np.asarray(precision.fake_quantize(w, bits))
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(w).max(axis=(0, 1, 2)) / qmax
        np.testing.assert_allclose(np.abs(q).max(axis=(0, 1, 2)), np.abs(w).max(axis=(0, 1, 2)), rtol=1e-6)
        steps = q / scale
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
        assert np.abs(q - w).max(axis=(0, 1, 2)).max() <= (scale / 2 * 1.0001).max()
    assert np.all(precision.fake_quantize(np.zeros((2, 3)), 8) == 0)


def test_quantize_kernels_touches_only_kernels(tiny):
    _, variables = tiny
    q = precision.quantize_kernels(variables["params"], 4)
    flat_q = jax.tree_util.tree_flatten_with_path(q)[0]
    flat = dict(jax.tree_util.tree_flatten_with_path(variables["params"])[0])
    changed = {jax.tree_util.keystr(p).split("'")[-2] for p, v in flat_q if not np.array_equal(v, flat[p])}
    assert changed == {"kernel"}
    assert 0 < precision.weight_quantization_error(variables["params"], 4) < 0.2
    assert precision.weight_quantization_error(variables["params"], 8) < precision.weight_quantization_error(
        variables["params"], 4)


def test_half_precision_casts_every_floating_parameter_and_only_those(tiny):
    module, variables = tiny
    params = dict(variables["params"], step_count=jnp.arange(3))  # an integer leaf stays as it is
    low, cast = precision.for_precision(module, dict(variables, params=params), "bf16")
    assert low.dtype == jnp.bfloat16
    for (path, leaf), (_, before) in zip(jax.tree_util.tree_flatten_with_path(cast["params"])[0],
                                          jax.tree_util.tree_flatten_with_path(params)[0]):
        want = jnp.bfloat16 if jnp.issubdtype(before.dtype, jnp.floating) else before.dtype
        assert leaf.dtype == want, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(before).astype(want))


def test_a_module_without_a_dtype_field_is_refused_in_half_precision():
    class NoDtype(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x)

    with pytest.raises(ValueError, match=r"^NoDtype has no 'dtype' field; cannot run it in fp16$"):
        precision.for_precision(NoDtype(), {"params": {"Dense_0": {"kernel": np.ones((2, 2), np.float32)}}}, "fp16")


@pytest.mark.parametrize("norm,name", [("layernorm", "fp16"), ("iln", "bf16")])
def test_features_stay_in_the_low_precision_dtype(tiny, name, norm):
    module, variables = tiny
    module, variables = precision.for_precision(module.clone(norm=norm), variables, name)
    dtype = precision.FLOAT_DTYPES[name]
    x = jnp.full((1, 8, 8, 3), 0.5)
    feats, out = jax.jit(lambda v, x: (diagnostics.capture_features(module, v, x, level="all"),
                                       module.apply(v, x)))(variables, x)
    assert feats and all(f.dtype == dtype for f in feats.values()), {k: f.dtype for k, f in feats.items()}
    assert out.dtype == dtype


def test_fp16_overflow_is_counted_and_bf16_survives_it(tiny):
    module, variables = tiny
    params = jax.tree.map(lambda v: v, variables["params"])
    params["conv_first"]["kernel"] = params["conv_first"]["kernel"] * 1e6  # features ~1e5 > fp16 max
    big = {"params": params}
    x = np.full((1, 8, 8, 3), 0.7, np.float32)
    m16, v16 = precision.for_precision(module, big, "fp16")
    mbf, vbf = precision.for_precision(module, big, "bf16")
    out16 = np.asarray(jax.jit(m16.apply)(v16, x), np.float32)
    outbf = np.asarray(jax.jit(mbf.apply)(vbf, x), np.float32)
    assert precision.nonfinite_pixels(out16) > 0
    assert precision.nonfinite_pixels(outbf) == 0


def test_precision_report_runs_every_mode(tiny):
    module, variables = tiny
    rng = np.random.default_rng(0)
    eval_set = [{"name": f"im{i}", "lq": rng.uniform(size=(12, 12, 3)).astype(np.float32),
                 "gt": rng.uniform(size=(24, 24, 3)).astype(np.float32)} for i in range(2)]
    rep = precision_report(module, variables, eval_set, tasks.convention("sr", 2))
    assert set(rep) == set(precision.PRECISIONS)
    assert rep["fp32"]["psnr_vs_fp32"] == float("inf") and rep["fp32"]["max_abs_vs_fp32"] == 0
    for p in ("fp16", "bf16", "int8", "int4"):
        assert rep[p]["nonfinite_pixels"] == 0 and rep[p]["psnr_vs_fp32"] > 20, (p, rep[p])
    assert rep["int8"]["max_abs_vs_fp32"] < rep["int4"]["max_abs_vs_fp32"]
    assert "| tiny | int4 |" in format_report({"tiny": rep})

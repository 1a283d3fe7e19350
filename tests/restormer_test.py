"""Restormer and the ExDA options: golden parity, conversion both ways, parameter counts, every
norm x option, and the ExDA primitives' definitions."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden
from backbone_smoke import each_norm_with, synthetic_variables
from iln_jax import convert, models
from iln_jax.layers import channel_attention as ca
from iln_jax.layers.norms import BiasFreeLayerNorm
from iln_jax.models.restormer import EXDA_PARAMS, EXDA_SIZES

TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8))
EXDA_TINY = dict(value_transform="residual", global_tokens=4)  # head width 8 everywhere


def check_init_apply_jit(module, x, execute=True):
    """Init (abstractly, as jit traces it) and a jitted apply: in train mode for BatchNorm (batch
    statistics, running-statistics update), in eval mode for every other norm.

    ``execute=False`` stops after lowering the jitted apply to XLA's input (every trace-time error,
    shape and dtype is checked); compiling a U-Net costs seconds per cell on a CPU, so the grid
    tests run only representative cells numerically.
    """
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    train = "batch_stats" in shapes
    apply = jax.jit(functools.partial(module.apply, train=train, mutable=["batch_stats"] if train else False))
    if not execute:
        out = apply.lower(shapes, x).out_info
    else:
        out = apply(synthetic_variables(module, x), x)
        assert np.isfinite(np.asarray(out[0] if train else out)).all()
    out, state = out if train else (out, None)
    assert out.shape == x.shape
    if train:
        assert jax.tree.structure(state["batch_stats"]) == jax.tree.structure(shapes["batch_stats"])


def grid_input(batch=2):
    # 12x20: not a multiple of 8, so the reflect padding and the crop are exercised too.
    return jnp.asarray(np.random.default_rng(1).uniform(size=(batch, 12, 20, 3)), jnp.float32)


# -- the official model -------------------------------------------------------------------------

# restormer_withbias: the shared golden (dim 8); restormer_biasfree: made by scripts/make_goldens.py
# (dim 4, the Gaussian-denoising LayerNorm). ExDA's options are off, as named here: with them on there
# is no official code to compare with, so ExDA is checked against its definitions below.
GOLDEN = ["restormer_withbias", "restormer_biasfree"]
EXDA_OFF = dict(value_transform="none", global_tokens=0)


@pytest.mark.parametrize("name", GOLDEN)
def test_matches_the_official_output(name):
    sd, kwargs, x, ref = golden.load(name)
    module, variables = convert.from_torch("restormer", sd, **kwargs, **EXDA_OFF)
    golden.assert_matches(golden.run(module, variables, x), ref)


@pytest.mark.parametrize("name", GOLDEN)
def test_to_torch_inverts_from_torch_exactly(name):
    sd, kwargs, _, _ = golden.load(name)
    _, variables = convert.from_torch("restormer", sd, **kwargs)
    back = convert.to_torch("restormer", variables, **kwargs)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_biasfree_checkpoints_convert_both_ways():
    kwargs = dict(TINY, LayerNorm_type="BiasFree")
    module = models.create("restormer", **kwargs)
    variables = synthetic_variables(module, jnp.zeros((1, 8, 8, 3)))
    sd = convert.to_torch("restormer", variables, **kwargs)
    assert "encoder_level1.0.norm1.body.weight" in sd
    assert not any(k.endswith("body.bias") for k in sd)
    _, back = convert.from_torch("restormer", sd, **kwargs)
    jax.tree.map(np.testing.assert_array_equal, back, variables)
    with pytest.raises(convert.ConversionError, match=r"missing keys \(16\)"):  # WithBias wants biases
        convert.from_torch("restormer", sd, **TINY)


def test_biasfree_layernorm_scales_without_centring():
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(2, 3, 4, 8)).astype(np.float32)
    norm = BiasFreeLayerNorm()
    variables = {"params": {"scale": np.linspace(0.5, 2, 8, dtype=np.float32)}}
    y, branch_scale = norm.apply(variables, x)
    ref = x / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * variables["params"]["scale"]
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)
    assert branch_scale == 1.0


@pytest.mark.parametrize("layernorm_type, count, tensors", [("WithBias", 26_126_644, 494),
                                                             ("BiasFree", 26_111_668, 406)])
def test_official_parameter_counts(layernorm_type, count, tensors):
    module = models.create("restormer", LayerNorm_type=layernorm_type)
    params = jax.tree.leaves(jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    assert sum(int(np.prod(p.shape)) for p in params) == count and len(params) == tensors


# -- ExDA -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", sorted(EXDA_SIZES))
def test_exda_sizes(size):
    module = models.create("restormer", **EXDA_SIZES[size])
    assert golden.count_params(module, (1, 8, 8, 3)) == EXDA_PARAMS[size]


def test_exda_adds_exactly_its_primitives():
    """Per attention: value transform 2C^2 + 9C (bias-free 1x1, dw 3x3, 1x1), tokens C*heads*K + alpha."""
    kw = dict(EXDA_SIZES["small"], dim=16, num_blocks=(1, 2, 1, 2), num_refinement_blocks=1)
    base = dict(kw, value_transform="none", global_tokens=0)
    widths = {"encoder_level1": 1, "encoder_level2": 2, "encoder_level3": 4, "latent": 8,
              "decoder_level3": 4, "decoder_level2": 2, "decoder_level1": 2, "refinement": 2}
    rows = {"encoder_level1": 0, "encoder_level2": 1, "encoder_level3": 2, "latent": 3,
            "decoder_level3": 2, "decoder_level2": 1, "decoder_level1": 0, "refinement": 0}
    extra = 0
    for level, mult in widths.items():
        c, heads = kw["dim"] * mult, kw["heads"][rows[level]]
        depth = kw["num_refinement_blocks"] if level == "refinement" else kw["num_blocks"][rows[level]]
        extra += depth * (2 * c * c + 9 * c + c * heads * kw["global_tokens"] + 1)
    shape = (1, 8, 8, 3)
    assert (golden.count_params(models.create("restormer", **kw), shape)
            - golden.count_params(models.create("restormer", **base), shape)) == extra


@pytest.mark.parametrize("levels, present", [("encoder", "encoder_level1_0"), ("decoder", "refinement_0")])
def test_value_transform_placement(levels, present):
    module = models.create("restormer", **TINY, value_transform="residual", value_transform_levels=levels)
    params = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    with_transform = {name for name, p in params.items() if "attn" in p and "value_transform" in p["attn"]}
    assert present in with_transform and len(with_transform) == 4


def test_nonlinear_value_forms():
    v = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 4, 6)), jnp.float32)
    variables = ca.NonlinearValue().init(jax.random.key(0), v)
    g = ca.NonlinearValue(residual=False).apply(variables, v)
    np.testing.assert_allclose(ca.NonlinearValue(residual=True).apply(variables, v), v + g, rtol=1e-6)
    zeroed = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.zeros_like(a) if "proj_out" in jax.tree_util.keystr(p) else a, variables)
    np.testing.assert_array_equal(ca.NonlinearValue().apply(zeroed, v), v)  # g = 0: plain MDTA value


def test_global_tokens_are_spatial_distributions():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 12, 16)), jnp.float32)
    gst = ca.GlobalSpatialTokens(num_heads=2, num_tokens=3, stride=2)
    tokens = gst.apply(gst.init(jax.random.key(0), x), x)
    assert tokens.shape == (2, 2, 3, 8 * 12)
    # softmax over the 4x6 pooled positions, bilinearly upsampled 2x: sums to 4 per token
    np.testing.assert_allclose(np.asarray(tokens.sum(-1)), 4.0, rtol=1e-5)
    assert (np.asarray(tokens) > 0).all()


def test_global_token_alpha_starts_at_0_1_and_tokens_must_divide_the_head_width():
    x = jnp.ones((1, 8, 8, 16))
    attn = ca.MDTA(16, 2, global_tokens=4)
    params = jax.jit(attn.init)(jax.random.key(0), x)["params"]
    assert float(params["alpha"]) == pytest.approx(0.1)
    assert params["global_tokens"]["proj"]["kernel"].shape == (1, 1, 16, 2 * 4)
    with pytest.raises(ValueError, match="must divide the head width"):
        ca.MDTA(16, 2, global_tokens=3).init(jax.random.key(0), x)


def test_resampling_matrices_match_pytorch():
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    a = np.random.default_rng(0).normal(size=(2, 5, 7)).astype(np.float32)
    for n_out, m_out in [(12, 9), (5, 7), (3, 2)]:
        ref = f.interpolate(torch.from_numpy(a)[:, None], size=(n_out, m_out), mode="bilinear",
                            align_corners=False)[:, 0].numpy()
        got = ca.resample_2d(a, ca.bilinear_matrix(n_out, 5), ca.bilinear_matrix(m_out, 7))
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)
        ref = f.adaptive_avg_pool2d(torch.from_numpy(a), (n_out, m_out)).numpy()
        got = ca.resample_2d(a, ca.adaptive_pool_matrix(n_out, 5), ca.adaptive_pool_matrix(m_out, 7))
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)


# -- every norm, every option ----------------------------------------------------------------------------

# Executed numerically: the ExDA model with i-LN (per-image statistics and branch rescale); the official
# layernorm model runs in the golden-parity tests. Every other case is traced and lowered to XLA
# (shapes, dtypes, every trace-time error), not compiled: a U-Net compiles in seconds per case.
EXECUTED = ("iln", "exda")
LOWERED = [case for case in each_norm_with(("official", "exda")) if case != EXECUTED]


def _grid_model(norm, options, **extra):
    return models.create("restormer", norm=norm, **TINY, **(EXDA_TINY if options == "exda" else {}), **extra)


@pytest.mark.parametrize("norm,options", LOWERED)
def test_every_norm_and_option_initializes_and_lowers(norm, options):
    check_init_apply_jit(_grid_model(norm, options), grid_input(), execute=False)


def test_iln_with_the_exda_options_applies():
    check_init_apply_jit(_grid_model(*EXECUTED), grid_input(), execute=True)


@pytest.mark.parametrize("options", [
    dict(value_transform="replace", global_tokens=8, use_checkpoint=True),  # K = head width
    dict(value_transform="residual", value_transform_levels="decoder", global_tokens=1, LayerNorm_type="BiasFree"),
])
def test_other_exda_options_initialize_and_lower(options):
    check_init_apply_jit(models.create("restormer", **TINY, **options), grid_input(batch=1), execute=False)


def test_dual_pixel_layout():
    module = models.create("restormer", **TINY, inp_channels=6, dual_pixel_task=True)
    out = jax.eval_shape(module.apply, synthetic_variables(module, jnp.zeros((1, 16, 16, 6))),
                         jax.ShapeDtypeStruct((1, 16, 16, 6), jnp.float32))
    assert out.shape == (1, 16, 16, 3)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="LayerNorm_type"):
        jax.eval_shape(models.create("restormer", **TINY, LayerNorm_type="Bias").init,
                       jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="value_transform"):
        jax.eval_shape(models.create("restormer", **TINY, value_transform="gelu").init,
                       jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def _config(spec):
    from iln_jax.train import load_config, validate_config
    c = load_config(str(golden.DATA.parent.parent / "configs" / spec))
    validate_config(c)
    return c


def test_configs_build():
    dn = _config("restormer_denoise.py")
    assert dn.model.kwargs.LayerNorm_type == "BiasFree" and dn.mixing.mixup and dn.data.task == "dn"
    assert (dn.optim.optimizer, dn.optim.lr, dn.optim.weight_decay, dn.optim.b2) == ("adamw", 3e-4, 1e-4, 0.999)
    assert dn.optim.grad_clip == 0.01 and dn.optim.periods == (92_000, 208_000)
    assert dn.optim.eta_mins == (3e-4, 1e-6) and dn.optim.schedule == "cosine_restart"
    assert dn.progressive.gt_sizes == (128, 160, 192, 256, 320, 384) and dn.train.num_steps == 300_000
    dr = _config("restormer_derain.py:arch=hint,norm=iln")
    assert dr.loss.fft_weight == 0.1 and dr.model.kwargs.heads == (8, 8, 8, 8) and not dr.mixing.mixup
    assert dr.eval.test_y_channel and dr.data.task == "dr"
    for arg in ("tiny=1", "arch=hint,tiny=1", "exda=tiny,norm=iln,tiny=1"):
        c = _config(f"restormer_derain.py:{arg}")
        module = models.create(c.model.arch, norm=c.model.norm, **c.model.kwargs)
        side = c.progressive.gt_sizes[0]
        assert golden.count_params(module, (1, side, side, 3)) > 0
        assert c.train.num_steps == sum(c.progressive.iters) == sum(c.optim.periods)


def test_missing_keys_are_reported_under_their_official_names():
    sd, kwargs, _, _ = golden.load("restormer_withbias")
    del sd["encoder_level1.0.norm1.body.bias"]
    with pytest.raises(convert.ConversionError, match=r"missing keys \(1\):\n    encoder_level1.0.norm1.body.bias"):
        convert.from_torch("restormer", sd, **kwargs)

"""HINT: parity with the official code (faithful mode: the first call and the next one, which carries
the official cross-call cache) and with the corrected design written in PyTorch on the official
modules (corrected mode), official layout and parameter count, conversion both ways, the modes'
batch coupling and state, and every norm in both modes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden
from iln_jax import convert, models
from iln_jax.models import hint
from backbone_smoke import each_norm_with, synthetic_variables
from restormer_test import check_init_apply_jit, grid_input

TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(8, 8, 8, 8))


def _shapes(module, side=8):
    return jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))


# hint_faithful: the official model; hint_corrected: scripts/golden_hint_corrected.py (the official
# modules with the corrected HMHA; there is no official code for it). Both: scripts/make_goldens.py.
GOLDEN = ["hint_faithful", "hint_corrected"]
CACHE_ATOL = 1e-6  # the faithful cache floors: a value off by round-off at an integer would be 0.1 off


@functools.lru_cache(maxsize=None)
def _converted(name):
    sd, kwargs, x, ref = golden.load(name)
    module, variables = convert.from_torch("hint", sd, **kwargs)
    return name, sd, kwargs, x, ref, variables, jax.jit(functools.partial(module.apply, return_cache=True))


@pytest.fixture(scope="module", params=GOLDEN)
def converted(request):
    return _converted(request.param)


def test_matches_the_official_output(converted):
    _, _, kwargs, x, ref, variables, apply = converted
    out, cache = apply(variables, x)
    golden.assert_matches(np.asarray(out), ref)
    assert cache.shape == ((1, 8, 8) if kwargs["faithful"] else (2, 8, 8))  # batch mean / per image


def test_faithful_mode_returns_the_official_cache_and_reproduces_the_next_call():
    """The official model keeps its last cache for the next call; the port takes it as ``qv_cache``."""
    _, _, _, x, _, variables, apply = _converted("hint_faithful")
    official_cache = golden.load_extra("hint_faithful", "cache")
    assert np.abs(official_cache).max() > 0.05  # the floor division does not zero it everywhere
    _, cache = apply(variables, x)
    np.testing.assert_allclose(np.asarray(cache), official_cache, rtol=0, atol=CACHE_ATOL)
    out2, cache2 = apply(variables, golden.load_extra("hint_faithful", "input2"), qv_cache=official_cache)
    golden.assert_matches(np.asarray(out2), golden.load_extra("hint_faithful", "output2"), "second call")
    np.testing.assert_allclose(np.asarray(cache2), golden.load_extra("hint_faithful", "cache2"), rtol=0,
                               atol=CACHE_ATOL)


def test_to_torch_inverts_from_torch_exactly(converted):
    _, sd, kwargs, *_, variables, _ = converted
    back = convert.to_torch("hint", variables, **kwargs)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_official_full_config_parameter_count_and_tensors():
    """The released ymls: dim 48, [4,6,6,8], 4 refinement blocks, heads [8,8,8,8]: 24.87M, 948 keys."""
    shapes = _shapes(models.create("hint", heads=(8, 8, 8, 8)))
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes)) == 24_873_812
    assert len(jax.tree.leaves(shapes)) == 948


def test_official_key_layout():
    module = models.create("hint", **TINY)
    sd = convert.to_torch("hint", synthetic_variables(module, jnp.zeros((1, 8, 8, 3))), **TINY)
    assert len(sd) == 190  # the official tiny model's state_dict
    assert sd["latent.0.attn.temperature"].shape == (4, 1, 1)
    assert sd["latent.0.attn.inter_modulator4.conv_width.weight"].shape == (48, 24, 1)
    assert sd["latent.0.attn.inter_modulator4.conv_width.bias"].shape == (48,)
    assert sd["decoder_level1.0.attn.intra_modulator.down.weight"].shape == (8, 16, 1)
    # FFN-only encoder blocks, as the official isAtt=False
    assert sorted(k for k in sd if k.startswith("encoder_level1.0.")) == [
        "encoder_level1.0.ffn.dwconv.weight", "encoder_level1.0.ffn.project_in.weight",
        "encoder_level1.0.ffn.project_out.weight", "encoder_level1.0.norm2.body.bias",
        "encoder_level1.0.norm2.body.weight"]
    _, back = convert.from_torch("hint", sd, **TINY)
    again = convert.to_torch("hint", back, **TINY)
    for key, value in sd.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_latent_uses_num_blocks_1_and_encoders_have_no_attention():
    params = _shapes(models.create("hint", **dict(TINY, num_blocks=(1, 2, 3, 4))))["params"]
    assert sum(name.startswith("latent_") for name in params) == 2
    assert sum(name.startswith("decoder_level3_") for name in params) == 3
    assert all("attn" not in p for name, p in params.items() if name.startswith("encoder_level"))


def test_corrected_mode_keeps_images_independent():
    module = models.create("hint", **TINY)
    variables = synthetic_variables(module, jnp.zeros((2, 16, 16, 3)))
    rng = np.random.default_rng(0)
    a, b, c = (rng.uniform(size=(1, 16, 16, 3)).astype(np.float32) for _ in range(3))
    apply = jax.jit(functools.partial(module.apply, return_cache=True))
    (out_ab, cache), (out_ac, _) = apply(variables, np.concatenate([a, b])), apply(variables, np.concatenate([a, c]))
    np.testing.assert_allclose(np.asarray(out_ab[0]), np.asarray(out_ac[0]), rtol=0, atol=1e-5)
    assert np.abs(np.asarray(out_ab[1] - out_ac[1])).max() > 1e-3
    assert cache.shape == (2, 16, 16)  # per image, at the refinement width
    with pytest.raises(ValueError, match="faithful=True"):
        module.apply(variables, a, qv_cache=cache[:1])


def test_faithful_mode_couples_the_batch_and_depends_on_the_cache():
    """As the official HMHA: image 0's output depends on image 1 (batch-mean ranking and cache), and a
    call with a cache (any later official call) differs from the first call after construction (the
    values themselves: test_faithful_mode_returns_the_official_cache_and_reproduces_the_next_call)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 16)), jnp.float32)
    other = x.at[1].set(x[1, ::-1])
    attn = hint.HMHA(16, faithful=True)
    variables = synthetic_variables(attn, x)
    apply = jax.jit(attn.apply)
    (out, cache), (out_other, _) = apply(variables, x), apply(variables, other)
    assert cache.shape == (1, 16, 16)  # batch mean, as the official module's attribute
    assert np.abs(np.asarray(out[0] - out_other[0])).max() > 1e-4
    warm, _ = jax.jit(attn.apply)(variables, x, jnp.zeros((1, 16, 16)))
    assert np.abs(np.asarray(warm - out)).max() > 1e-4  # even an all-zero cache modulates
    # the model threads an explicit cache: None in, the last attention block's cache out
    model = models.create("hint", faithful=True, **TINY)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    out, cache = jax.eval_shape(functools.partial(model.apply, return_cache=True), shapes,
                                jnp.zeros((1, 16, 16, 3)), qv_cache=jnp.zeros((1, 16, 16)))
    assert out.shape == (1, 16, 16, 3) and cache.shape == (1, 16, 16)


def test_faithful_cache_update_floors_and_the_corrected_one_averages():
    """Official ``update * c_i // C``: 0 for entries in [0, C/c_i), -1 for negative ones."""
    attns = [jnp.full((1, s, s), 0.5) for s in hint.group_sizes(16)]
    attns[0] = attns[0].at[0, 0, 0].set(-0.3)  # a modulated map can go negative
    faithful = np.asarray(hint.layer_cache(attns, 16, faithful=True))
    assert faithful.shape == (1, 16, 16) and faithful.max() == 0 and faithful.min() == -1
    np.testing.assert_allclose(np.asarray(hint.layer_cache(attns[1:], 16, faithful=False)),
                               0.5 * (14 / 16), rtol=1e-6)  # sum of c_i / C = 14/16 over groups 2-4


def test_channel_ranking():
    q = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 20)), jnp.float32)
    per_image = hint.rank_channels(q, faithful=False)
    assert per_image.shape == (2, 8)
    np.testing.assert_array_equal(per_image[1], hint.rank_channels(q[1:], faithful=False)[0])
    assert hint.rank_channels(q, faithful=True).shape == (1, 8)
    # A constant channel makes torch.corrcoef NaN in every row, every score NaN, and torch.sort
    # returns the identity order (checked against torch 2.x); the corrected ranking stays defined.
    constant = q.at[:, 3].set(1.0)
    np.testing.assert_array_equal(hint.rank_channels(constant, faithful=True)[0], np.arange(8))
    corrected = np.asarray(hint.rank_channels(constant, faithful=False))
    assert sorted(corrected[0]) == list(range(8)) and not (corrected == np.arange(8)).all()


def test_width_must_split_into_eighths():
    x = jnp.ones((1, 4, 4, 12))
    with pytest.raises(ValueError, match="divisible by 8"):
        hint.HMHA(12).init(jax.random.key(0), x)


# Traced and lowered to XLA only, not compiled: the numerics of both modes run against the goldens above
# (layernorm), and those of every norm's block wrapper in the Restormer grid (the same TransformerBlock).
@pytest.mark.parametrize("norm,faithful", each_norm_with((False, True)),
                         ids=lambda value: {False: "corrected", True: "faithful"}.get(value, value))
def test_every_norm_and_mode_initializes_and_lowers(norm, faithful):
    check_init_apply_jit(models.create("hint", norm=norm, faithful=faithful, **TINY), grid_input(),
                         execute=False)


def test_initialized_parameters_of_the_cache_free_first_block_exist():
    """The first attention block never sees a cache, yet has the official inter modulators."""
    params = jax.eval_shape(hint.HMHA(16).init, jax.random.key(0), jnp.ones((1, 4, 4, 16)))["params"]
    assert {f"inter_modulator{i}" for i in range(1, 5)} <= set(params)
    assert params["inter_modulator4"]["conv_width"]["kernel"].shape == (1, 6, 12)
    assert golden.count_params(models.create("hint", **TINY), (1, 8, 8, 3)) == 218_758  # official tiny


@pytest.mark.parametrize("levels, expected", [
    ("all", {"latent_0", "decoder_level3_0", "decoder_level2_0", "decoder_level1_0", "refinement_0"}),
    ("encoder", {"latent_0"}),  # HINT's encoder blocks have no attention; the bottleneck counts as encoder
    ("decoder", {"decoder_level3_0", "decoder_level2_0", "decoder_level1_0", "refinement_0"}),
])
def test_exda_value_transform_placement_in_hint(levels, expected):
    params = _shapes(models.create("hint", **TINY, value_transform="residual", value_transform_levels=levels))["params"]
    assert {n for n, p in params.items() if "attn" in p and "value_transform" in p["attn"]} == expected


def test_exda_value_transform_in_hint_changes_the_output_and_converts():
    kwargs = dict(TINY, value_transform="residual")
    module = models.create("hint", **kwargs)
    x = grid_input(1)
    variables = synthetic_variables(module, x)
    plain_vars = {"params": {n: ({**p, "attn": {k: v for k, v in p["attn"].items() if k != "value_transform"}}
                                 if "attn" in p else p) for n, p in variables["params"].items()}}
    apply = jax.jit(module.apply)
    out, out_plain = apply(variables, x), jax.jit(models.create("hint", **TINY).apply)(plain_vars, x)
    assert np.all(np.isfinite(out)) and not np.allclose(out, out_plain)
    sd = convert.to_torch("hint", variables, **kwargs)
    assert any(k.startswith("latent.0.attn.value_transform.") for k in sd)
    _, back = convert.from_torch("hint", sd, **kwargs)
    np.testing.assert_array_equal(apply(back, x), out)


def test_exda_global_tokens_in_hmha_convert_both_ways_and_stay_per_image():
    """K = 2 tokens per channel group (tiny width 16 at the first attention level: groups 2/4/4/6)."""
    kwargs = dict(TINY, global_tokens=2)
    module = models.create("hint", **kwargs)
    x = grid_input(2)
    variables = synthetic_variables(module, x)
    attn = variables["params"]["latent_0"]["attn"]
    assert attn["global_tokens"]["proj"]["kernel"].shape == (1, 1, 64, 4 * 2) and attn["alpha"].shape == ()
    apply = jax.jit(module.apply)
    out = apply(variables, x)
    assert np.all(np.isfinite(out))
    # corrected mode: an image's output does not depend on the rest of the batch, tokens included
    # (image 0 changed, image 1 kept: the same program, no second compile)
    changed = apply(variables, x.at[0].set(x[0, ::-1]))
    np.testing.assert_allclose(changed[1], out[1], rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(changed[0] - out[0])).max() > 1e-3
    sd = convert.to_torch("hint", variables, **kwargs)
    assert sd["latent.0.attn.global_tokens.proj.weight"].shape == (8, 64, 1, 1) and "latent.0.attn.alpha" in sd
    assert len(sd) == 190 + 2 * 5  # + proj weight and alpha in each of the 5 attention blocks
    _, back = convert.from_torch("hint", sd, **kwargs)
    np.testing.assert_array_equal(apply(back, x), out)
    plain_sd = {k: v for k, v in sd.items() if ".global_tokens." not in k and not k.endswith(".alpha")}
    with pytest.raises(convert.ConversionError, match="missing keys"):  # the official layout lacks them
        convert.from_torch("hint", plain_sd, **kwargs)
    plain, plain_vars = convert.from_torch("hint", plain_sd, **TINY)
    assert not np.allclose(jax.jit(plain.apply)(plain_vars, x), out)  # the tokens change the output
    with pytest.raises(ValueError, match=r"^hint: global_tokens=4 must divide every HMHA channel group"):
        models.create("hint", **dict(TINY, global_tokens=4))

"""SwinIR: parity with the official PyTorch model, parameter counts, every norm and upsampler."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden
from backbone_smoke import each_norm_with
from iln_jax import convert, models
from iln_jax.layers.padding import pad_to_multiple

GOLDEN = ["swinir_sr_x2_pixelshuffle", "swinir_dn_3conv"]


@pytest.mark.parametrize("name", GOLDEN)
def test_matches_the_official_output(name):
    sd, kwargs, x, ref = golden.load(name)
    module, variables = convert.from_torch("swinir", sd, **kwargs)
    golden.assert_matches(golden.run(module, variables, x), ref)


@pytest.mark.parametrize("name", GOLDEN)
def test_to_torch_inverts_from_torch_exactly(name):
    sd, kwargs, _, _ = golden.load(name)
    _, variables = convert.from_torch("swinir", sd, **kwargs)
    back = convert.to_torch("swinir", variables, **kwargs)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
        assert back[key].shape == value.shape, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)


CLASSICAL_X4 = dict(upscale=4, in_chans=3, img_size=64, window_size=8, img_range=1.0, depths=[6] * 6,
                    embed_dim=180, num_heads=[6] * 6, mlp_ratio=2, upsampler="pixelshuffle",
                    resi_connection="1conv")


def test_classical_x4_has_the_official_parameter_count():
    module = models.create("swinir", **CLASSICAL_X4)
    assert golden.count_params(module, (1, 64, 64, 3)) == 11_900_199


def _tiny(norm, upsampler, **kw):
    args = dict(img_size=8, window_size=4, depths=(2,), num_heads=(2,), embed_dim=8, mlp_ratio=2,
                upsampler=upsampler, upscale=2, resi_connection="1conv")
    args.update(kw)
    return models.create("swinir", norm=norm, **args)


@pytest.mark.parametrize("norm,upsampler", each_norm_with(("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")))
def test_every_norm_and_upsampler_initializes_applies_and_jits(norm, upsampler):
    module = _tiny(norm, upsampler)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 9, 7, 3)), jnp.float32)

    @jax.jit
    def init_and_apply(key, x):
        eval_out, variables = module.init_with_output(key, x)
        train_out, _ = module.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
        return train_out, eval_out

    train_out, eval_out = init_and_apply(jax.random.key(0), x)
    scale = 1 if upsampler == "" else 2
    assert train_out.shape == eval_out.shape == (2, 9 * scale, 7 * scale, 3)
    assert np.isfinite(np.asarray(eval_out)).all()


@pytest.mark.parametrize("resi", ["3conv", "identity"])
def test_residual_connection_variants(resi):
    module = _tiny("layernorm", "pixelshuffle", resi_connection=resi, in_chans=1, upscale=3)
    x = jnp.ones((1, 5, 6, 1))
    out = jax.jit(lambda k, x: module.apply(module.init(k, x), x))(jax.random.key(0), x)
    assert out.shape == (1, 15, 18, 1)


def test_padding_modes_follow_the_official_code():
    x = jnp.arange(2 * 5 * 6 * 1, dtype=jnp.float32).reshape(2, 5, 6, 1)
    reflect = np.asarray(pad_to_multiple(x, 4, "reflect"))
    np.testing.assert_array_equal(reflect, np.pad(np.asarray(x), ((0, 0), (0, 3), (0, 2), (0, 0)), "reflect"))
    # The official test script always pads (even a full window) and mirrors including the edge.
    sym = np.asarray(pad_to_multiple(x, 3, "symmetric"))
    np.testing.assert_array_equal(sym, np.pad(np.asarray(x), ((0, 0), (0, 1), (0, 3), (0, 0)), "symmetric"))
    assert pad_to_multiple(x[:, :4, :4], 4, "reflect").shape == (2, 4, 4, 1)


def test_bad_inputs_have_clear_errors():
    module = _tiny("layernorm", "pixelshuffle")
    with pytest.raises(ValueError, match="Expected 3 input channels"):
        module.init(jax.random.key(0), jnp.ones((1, 8, 8, 4)))
    with pytest.raises(ValueError, match="NHWC batch"):
        module.init(jax.random.key(0), jnp.ones((8, 8, 3)))
    with pytest.raises(ValueError, match="valid archs: swinir"):
        models.create("swinir2")
    with pytest.raises(ValueError, match="valid norms"):
        models.create("swinir", norm="groupnorm")
    with pytest.raises(TypeError, match="Unknown argument.*embed_dims"):
        models.create("swinir", embed_dims=8)
    with pytest.raises(ValueError, match="Unknown upsampler"):
        _tiny("layernorm", "bilinear").init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))

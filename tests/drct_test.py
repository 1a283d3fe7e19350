"""DRCT: parity with the official PyTorch model, the dense-group geometry, every norm, any size."""
import numpy as np
import pytest

import golden
from backbone_smoke import TRAIN_MODE_NORMS, init_apply_jit
from iln_jax import convert, models
from iln_jax.layers.norms import NORMS
from iln_jax.models.drct import rdg_block_geometry

NAME = "drct_sr_x2"


@pytest.fixture(scope="module")
def converted():
    sd, kwargs, x, ref = golden.load(NAME)
    module, variables = convert.from_torch("drct", sd, **kwargs)
    return sd, kwargs, x, ref, module, variables


def test_matches_the_official_output(converted):
    _, _, x, ref, module, variables = converted
    golden.assert_matches(golden.run(module, variables, x), ref)


def test_to_torch_inverts_from_torch_exactly(converted):
    sd, kwargs, _, _, _, variables = converted
    back = convert.to_torch("drct", variables, **kwargs)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_block_geometry_is_the_official_one():
    # DRCT (E 180, 6 heads, gc 32, ws 16): widths, heads, shifts and MLP widths of swin1..swin5
    blocks = [rdg_block_geometry(k, 180, 6, 32, 16, 64, 2.0) for k in range(1, 6)]
    assert [b[0] for b in blocks] == [180, 212, 244, 276, 308]
    assert [b[1] for b in blocks] == [6, 4, 2, 6, 4]
    assert [b[3] for b in blocks] == [0, 8, 0, 8, 0]
    assert [int(b[0] * b[4]) for b in blocks] == [360, 424, 488, 276, 308]
    with pytest.raises(ValueError, match="swin1: width 20 is not divisible by its 6 heads"):
        rdg_block_geometry(1, 20, 6, 4, 8, 16, 2.0)


def _tiny(norm="layernorm", **kw):
    args = dict(img_size=8, window_size=4, depths=(2,), num_heads=(2,), embed_dim=12, gc=4, mlp_ratio=2,
                upsampler="pixelshuffle", upscale=2)
    return models.create("drct", norm=norm, **{**args, **kw})


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_initializes_applies_and_jits(norm):
    init_apply_jit(_tiny(norm))


@pytest.mark.parametrize("norm", TRAIN_MODE_NORMS)
def test_training_forward(norm):
    init_apply_jit(_tiny(norm, drop_path_rate=0.5), train=True)


def test_official_config_arguments_drct_ignores_are_accepted():
    kwargs = models.variant_kwargs("drct")
    assert {"compress_ratio", "squeeze_factor", "conv_scale", "overlap_ratio"} <= set(kwargs)
    assert models.create("drct", **kwargs).gc == 32

"""HAT and the official i-LN HAT: parity with the official PyTorch models, every norm, any size."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden
from backbone_smoke import TRAIN_MODE_NORMS, init_apply_jit
from iln_jax import convert, models
from iln_jax.layers.norms import NORMS
from iln_jax.layers.window import (overlap_window_size, overlapping_relative_position_index,
                                   overlapping_window_partition)
from iln_jax.models.hat import HAT

GOLDEN = {"hat_sr_x2": "hat", "hat_iln_sr_x2": "hat_iln"}


def _load(name):
    """The official constructor kwargs, as given (the i-LN HAT's ``eps`` included)."""
    return golden.load(name)


@pytest.fixture(scope="module", params=list(GOLDEN))
def converted(request):
    name = request.param
    sd, kwargs, x, ref = _load(name)
    module, variables = convert.from_torch(GOLDEN[name], sd, **kwargs)
    return name, sd, kwargs, x, ref, module, variables, jax.jit(module.apply)


def test_matches_the_official_output(converted):
    _, _, _, x, ref, _, variables, apply = converted
    golden.assert_matches(np.asarray(apply(variables, x)), ref)


def test_to_torch_inverts_from_torch_exactly(converted):
    name, sd, kwargs, *_, variables, _ = converted
    back = convert.to_torch(GOLDEN[name], variables, **kwargs)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_official_iln_hat_is_hat_with_the_iln_norm():
    _, kwargs, _, _ = _load("hat_iln_sr_x2")
    official = convert.build("hat_iln", **kwargs)
    kwargs.pop("stdnorm")
    eps = kwargs.pop("eps")  # the official i-LN constructor's name for the norm's eps
    assert official == models.create("hat", norm="iln", stdnorm=True, norm_eps=eps, **kwargs)
    assert type(official) is HAT


def test_overlapping_windows_are_torch_unfold_of_zero_padded_maps():
    torch = pytest.importorskip("torch")
    ws, wse = 4, overlap_window_size(4, 0.5)
    x = np.random.default_rng(0).normal(size=(2, 8, 12, 5)).astype(np.float32)
    ours = np.asarray(overlapping_window_partition(jnp.asarray(x), ws, wse))
    unfold = torch.nn.Unfold(wse, stride=ws, padding=(wse - ws) // 2)(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    b, _, nw = unfold.shape
    ref = unfold.numpy().reshape(b, 5, wse * wse, nw).transpose(0, 3, 2, 1).reshape(b * nw, wse * wse, 5)
    np.testing.assert_array_equal(ours, ref)


def test_oca_index_wraps_like_pytorch_indexing():
    index = overlapping_relative_position_index(16, 24)
    assert index.shape == (256, 576) and index.min() == -880 and index.max() == 640  # official, ws 16
    table_len = (16 + 24 - 1) ** 2
    # every relative offset has its own index, and the wrap-around maps them one-to-one onto the table
    assert len(np.unique(index)) == table_len
    np.testing.assert_array_equal(np.unique(np.mod(index, table_len)), np.arange(table_len))


def _tiny(norm="layernorm", **kw):
    args = dict(img_size=8, window_size=4, depths=(2,), num_heads=(2,), embed_dim=12, mlp_ratio=2,
                compress_ratio=3, squeeze_factor=6, upsampler="pixelshuffle", upscale=2)
    return models.create("hat", norm=norm, **{**args, **kw})


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_initializes_applies_and_jits(norm):
    init_apply_jit(_tiny(norm))


@pytest.mark.parametrize("norm", TRAIN_MODE_NORMS)
def test_training_forward(norm):
    init_apply_jit(_tiny(norm, drop_path_rate=0.5), train=True)


def test_configurations_the_official_code_cannot_run_are_refused():
    x = jnp.ones((1, 8, 8, 3))
    with pytest.raises(ValueError, match="widens the window by 1"):
        _tiny(overlap_ratio=0.25).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="img_size >= window_size"):
        _tiny(img_size=4, window_size=8).init(jax.random.key(0), x)

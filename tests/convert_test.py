"""The converter's strictness and its input formats (.pth files, wrappers, tensors)."""
import numpy as np
import pytest

import golden
from iln_jax import convert
from iln_jax.layers.window import shifted_window_mask

NAME = "swinir_sr_x2_pixelshuffle"
MASK_KEY = "layers.0.residual_group.blocks.1.attn_mask"


@pytest.fixture(scope="module")
def case():
    return golden.load(NAME)


def test_all_problems_are_reported_together(case):
    sd, kwargs, _, _ = case
    bad = dict(sd)
    del bad["conv_first.bias"]
    bad["extra.weight"] = np.zeros(3, np.float32)
    bad["conv_last.weight"] = np.zeros((3, 64, 5, 5), np.float32)
    rpi = "layers.0.residual_group.blocks.0.attn.relative_position_index"
    bad[rpi] = sd[rpi] + 1
    with pytest.raises(convert.ConversionError) as err:
        convert.from_torch("swinir", bad, **kwargs)
    msg = str(err.value)
    assert "missing keys (1)" in msg and "conv_first.bias" in msg
    assert "unexpected keys (1)" in msg and "extra.weight" in msg
    assert "conv_last.weight: expected (3, 64, 3, 3), got (3, 64, 5, 5)" in msg
    assert "blocks.0.attn.relative_position_index: values differ" in msg


def test_a_mask_from_another_training_size_does_not_matter(case):
    sd, kwargs, x, ref = case
    other = dict(sd)
    for key in [k for k in sd if k.endswith("attn_mask")]:
        other[key] = shifted_window_mask(48, 48, 8, 4)  # trained at 48, as SwinIR #129
    module, variables = convert.from_torch("swinir", other, **kwargs)
    golden.assert_matches(golden.run(module, variables, x), ref)


def test_a_corrupted_mask_is_rejected(case):
    sd, kwargs, _, _ = case
    bad = dict(sd)
    bad[MASK_KEY] = np.zeros((36, 64, 64), np.float32)
    with pytest.raises(convert.ConversionError, match="not the shifted-window mask of a 48x48"):
        convert.from_torch("swinir", bad, **kwargs)


def test_constructor_mismatch_is_reported_as_shapes(case):
    sd, kwargs, _, _ = case
    with pytest.raises(convert.ConversionError, match=r"(?s)shape mismatches .*qkv.weight: expected \(96, 32\), got \(72, 24\)"):
        convert.from_torch("swinir", sd, **{**kwargs, "embed_dim": 32})


def test_pth_files_and_wrappers(case, tmp_path):
    torch = pytest.importorskip("torch")
    sd, kwargs, x, ref = case
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    path = tmp_path / "model.pth"
    is_buffer = lambda k: k.endswith(("relative_position_index", "attn_mask"))
    zeros = {k: v if is_buffer(k) else torch.zeros_like(v) for k, v in tensors.items()}
    torch.save({"params": zeros, "params_ema": tensors}, path)
    module, variables = convert.from_torch("swinir", str(path), **kwargs)  # params_ema preferred
    golden.assert_matches(golden.run(module, variables, x), ref)
    _, zero_vars = convert.from_torch("swinir", path, param_key="params", **kwargs)
    assert not np.any(np.asarray(zero_vars["params"]["conv_first"]["kernel"]))
    _, from_tensors = convert.from_torch("swinir", {"module." + k: v for k, v in tensors.items()}, **kwargs)
    np.testing.assert_array_equal(from_tensors["params"]["conv_first"]["bias"], sd["conv_first.bias"])


def test_files_that_are_not_state_dicts(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "not_sd.pth"
    torch.save({"epoch": 3, "optimizer": {"lr": 1.0}}, path)
    with pytest.raises(ValueError, match=r"Expected a state_dict .* found a dict with keys \['epoch', 'optimizer'\]"):
        convert.from_torch("swinir", path)
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="found an object of type list"):
        convert.from_torch("swinir", path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert.from_torch("swinir", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="No converter for arch 'swin'; valid: swinir"):
        convert.from_torch("swin", {})


def test_to_torch_rejects_foreign_variables(case):
    sd, kwargs, _, _ = case
    _, variables = convert.from_torch("swinir", sd, **kwargs)
    variables["params"]["bogus"] = {"kernel": np.zeros(1)}
    with pytest.raises(convert.ConversionError, match=r"(?s)Flax variables do not match swinir.*unexpected variables.*params/bogus/kernel"):
        convert.to_torch("swinir", variables, **kwargs)

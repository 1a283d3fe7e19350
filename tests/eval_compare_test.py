"""iln_jax.compare: name mapping, layouts, and the whole path on a small PyTorch model written here.

No official code is used: the test writes a 3-conv PyTorch model and its Flax twin into tmp_path
and runs ``python -m iln_jax.compare`` on them through the generic mapping.
"""
import json
import textwrap

import numpy as np
import pytest

from iln_jax import compare
from iln_jax.convert.swinir import SR_SEQUENCES

TORCH_MODEL = """
import torch.nn as nn

class TinyNet(nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.conv_first = nn.Conv2d(3, channels, 3, 1, 1)
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(), nn.Conv2d(channels, 3, 3, 1, 1))

    def forward(self, x):
        return x + self.body(self.conv_first(x))
"""

FLAX_MODEL = """
import flax.linen as nn

class TinyNet(nn.Module):
    channels: int = 4

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.channels, (3, 3), padding=1, name="conv_first")(x)
        y = nn.relu(nn.Conv(self.channels, (3, 3), padding=1, name="body_0")(y))
        return x + nn.Conv(3, (3, 3), padding=1, name="body_2")(y)
"""


def test_flax_paths_map_to_official_module_names():
    assert compare.flax_to_torch_name(("layers_0", "residual_group", "blocks_1"), SR_SEQUENCES) == \
        "layers.0.residual_group.blocks.1"
    assert compare.flax_to_torch_name(("layers_0", "residual_group", "blocks_1", "attn", "qkv"), SR_SEQUENCES) == \
        "layers.0.residual_group.blocks.1.attn.qkv"
    assert compare.flax_to_torch_name(("conv_after_body",), SR_SEQUENCES) == "conv_after_body"
    assert compare.flax_to_torch_name(("down1_2",), frozenset({"encoder_level1"})) == "down1_2"


def test_torch_layouts_are_brought_to_flax_layout():
    nchw = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(compare.to_flax_layout(nchw, (2, 4, 5, 3)), nchw.transpose(0, 2, 3, 1))
    tokens = np.arange(2 * 20 * 3, dtype=np.float32).reshape(2, 20, 3)
    np.testing.assert_array_equal(compare.to_flax_layout(tokens, (2, 4, 5, 3)), tokens.reshape(2, 4, 5, 3))
    windows = np.zeros((8, 16, 3))
    assert compare.to_flax_layout(windows, (8, 16, 3)) is windows
    assert compare.to_flax_layout(np.zeros((2, 3)), (3, 2)) is None


def test_end_to_end_on_a_small_model(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "torch_tiny.py").write_text(textwrap.dedent(TORCH_MODEL))
    (tmp_path / "flax_tiny.py").write_text(textwrap.dedent(FLAX_MODEL))
    out = tmp_path / "report.json"
    report = compare.main(["--torch-repo", str(tmp_path), "--torch-class", "torch_tiny:TinyNet",
                           "--flax-class", f"{tmp_path / 'flax_tiny.py'}:TinyNet", "--sequences", "body",
                           "--kwargs", '{"channels": 4}', "--size", "12", "--batch", "2", "--out", str(out)])
    names = [r["torch"] for r in report["modules"]]
    assert names == ["conv_first", "body.0", "body.2"]
    assert all(r["max_rel"] < 1e-5 for r in report["modules"]) and report["output"]["max_abs"] < 1e-5
    assert report["modules"][0]["shape"] == [2, 12, 12, 4]
    assert json.loads(out.read_text())["output"]["torch"] == "(output)"
    printed = capsys.readouterr().out
    assert "3 modules compared" in printed and "body.2" in printed


def test_a_difference_is_reported_where_it_starts(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "torch_tiny2.py").write_text(textwrap.dedent(TORCH_MODEL))
    (tmp_path / "flax_tiny2.py").write_text(textwrap.dedent(FLAX_MODEL))
    torch_model = compare.import_object("torch_tiny2:TinyNet", str(tmp_path))(channels=4).eval()
    flax_model = compare.import_object(f"{tmp_path / 'flax_tiny2.py'}:TinyNet")(channels=4)
    sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    variables = compare.generic_from_torch(flax_model, sd, ["body"], (1, 8, 8, 3))
    variables["params"]["body_0"]["bias"] = variables["params"]["body_0"]["bias"] + 0.5  # a porting bug
    x = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype(np.float32)
    report = compare.run_comparison(torch_model, flax_model, variables, x, ["body"])
    rel = {r["torch"]: r["max_rel"] for r in report["modules"]}
    assert rel["conv_first"] < 1e-5 and rel["body.0"] > 0.1
    assert report["output"]["max_abs"] > 1e-3

"""``python -m iln_jax.compare train`` on a small PyTorch SR model written here and its Flax twin.

No official code is used: the test writes both models into tmp_path and compares them through the
generic name mapping. A faithful twin stays at the chaos floor and ends at the same PSNR; a twin
with a slightly different layer drifts away from the floor and the report names where.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import xla_flags
from train_util import ROOT

torch = pytest.importorskip("torch")

TORCH_MODEL = """
import torch.nn as nn

class TinySR(nn.Module):
    def __init__(self, upscale=2, channels=8):
        super().__init__()
        self.conv_first = nn.Conv2d(3, channels, 3, 1, 1)
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, 1, 1))
        self.upsample = nn.Sequential(nn.Conv2d(channels, 3 * upscale ** 2, 3, 1, 1), nn.PixelShuffle(upscale))

    def forward(self, x):
        y = self.conv_first(x)
        self.last_mean = y.mean()  # a tensor of the graph kept on the module, as official i-LN HAT's norms do
        return self.upsample(y + self.body(y))
"""

FLAX_MODEL = """
import flax.linen as nn
from iln_jax.layers.basic import pixel_shuffle

class TinySR(nn.Module):
    upscale: int = 2
    channels: int = 8
    leak: float = 0.0  # 0: ReLU, as the PyTorch model; > 0: a deliberate porting bug

    @property
    def scale(self):
        return self.upscale

    @nn.compact
    def __call__(self, x, train=False):
        y = nn.Conv(self.channels, (3, 3), padding=1, name="conv_first")(x)
        b = nn.leaky_relu(nn.Conv(self.channels, (3, 3), padding=1, name="body_0")(y), self.leak)
        y = y + nn.Conv(self.channels, (3, 3), padding=1, name="body_2")(b)
        return pixel_shuffle(nn.Conv(3 * self.upscale ** 2, (3, 3), padding=1, name="upsample_0")(y), self.upscale)
"""

STEPS = 40


def _args(tmp_path, out, *extra, flax_kwargs="{}"):
    return ["train", "--torch-repo", str(tmp_path), "--torch-class", "torch_sr:TinySR",
            "--flax-class", f"{tmp_path / 'flax_sr.py'}:TinySR", "--sequences", "body,upsample",
            "--kwargs", '{"upscale": 2, "channels": 8}', "--flax-kwargs", flax_kwargs,
            "--config", str(ROOT / "configs" / "default.py"), "--set", "optim.milestones=(30,)",
            "--steps", str(STEPS), "--batch", "4", "--patch", "16", "--log-every", "10", "--out", str(out), *extra]


def _run(tmp_path, args, **env):
    (tmp_path / "torch_sr.py").write_text(textwrap.dedent(TORCH_MODEL))
    (tmp_path / "flax_sr.py").write_text(textwrap.dedent(FLAX_MODEL))
    return subprocess.run([sys.executable, "-m", "iln_jax.compare", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **xla_flags.process_env(1), **env})


@pytest.fixture(scope="module")
def faithful(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare_train")
    out = tmp / "out"
    proc = _run(tmp, _args(tmp, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_report_has_every_promised_field(faithful):
    out, proc = faithful
    report = json.loads((out / "report.json").read_text())
    for key in ("steps", "loss_jax", "loss_torch", "log_steps", "param_rel_diff", "floor_rel_diff",
                "psnr_jax", "psnr_torch", "psnr_bicubic", "ema_rel_diff", "ema_floor_rel_diff", "ratio"):
        assert key in report, key
    assert report["steps"] == list(range(1, STEPS + 1))
    assert report["log_steps"] == [0, 10, 20, 30, 40]
    assert len(report["loss_jax"]) == len(report["loss_torch"]) == STEPS
    assert (out / "report.png").stat().st_size > 10_000
    wrote = [line for line in proc.stdout.splitlines() if "wrote" in line]
    assert wrote and all(os.path.exists(p.strip()) for p in wrote[-1].split("wrote", 1)[1].split(","))


def test_a_faithful_twin_stays_at_the_chaos_floor(faithful):
    report = json.loads((faithful[0] / "report.json").read_text())
    assert report["param_rel_diff"][0] == 0.0  # the same weights at the start
    assert all(f > 0 for f in report["floor_rel_diff"])  # one ulp is a real perturbation
    np.testing.assert_allclose(report["loss_jax"], report["loss_torch"], rtol=1e-4)
    assert max(report["param_rel_diff"]) < 1e-5
    assert max(r for r in report["ratio"][1:]) < 20
    assert abs(report["psnr_jax"] - report["psnr_torch"]) < 0.01
    assert report["first_to_drift"] == {}


def test_a_porting_bug_drifts_away_from_the_floor_and_is_located(tmp_path):
    out = tmp_path / "out"
    proc = _run(tmp_path, _args(tmp_path, out, "--drift-factor", "100", flax_kwargs='{"leak": 0.01}'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["ratio"][-1] > 100
    assert report["first_to_drift"]["step"] == 10
    assert "beyond 100x its floor" in proc.stdout


@pytest.mark.parametrize("change, message", [
    (("--torch-class", "torch_sr:NoSuchNet"), "torch_sr has no 'NoSuchNet'"),
    (("--kwargs", '{"upscale": 2, "channels": 8, "depth": 3}'), "TinySR does not accept these arguments"),
    (("--flax-kwargs", '{"channels": 6}'), "missing"),
    (("--set", "optim.grad_clip=0.01"), "optim.grad_clip=0.01"),
])
def test_bad_input_is_one_line(tmp_path, change, message):
    args = _args(tmp_path, tmp_path / "out")
    flag, value = change
    if flag == "--flax-kwargs":  # the twin's own arguments: a shape that does not fit the weights
        args[args.index(flag) + 1] = value
    elif flag in args and flag != "--set":
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    proc = _run(tmp_path, args)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[compare] error:") and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_constructor_reading_a_missing_kwarg_is_named():
    from iln_jax.compare.pair import CompareError, construct

    class ReadsKwargs:  # as official i-LN HAT reads kwargs['stdnorm']
        def __init__(self, **kwargs):
            self.stdnorm = kwargs["stdnorm"]

    with pytest.raises(CompareError, match=r"^--kwargs: ReadsKwargs\(upscale=2\) failed: it reads the argument "
                                           r"'stdnorm', which --kwargs does not give; add it$"):
        construct(ReadsKwargs, {"upscale": 2}, "--kwargs")


def test_evaluation_copies_a_model_that_keeps_graph_tensors():
    from iln_jax.compare.torch_recipe import TorchTrainer

    class KeepsStats(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, 1, 1)

        def forward(self, x):
            y = self.conv(x)
            self.std = y.std()  # not a leaf: plain copy.deepcopy refuses the module
            return y

    trainer = TorchTrainer(KeepsStats(), schedule=lambda t: 1e-3, b1=0.9, b2=0.99, eps=1e-8, ema_decay=0.9)
    trainer.step({"lq": np.ones((1, 8, 8, 3), np.float32), "gt": np.zeros((1, 8, 8, 3), np.float32)})
    ema = trainer.eval_model("ema")
    assert not ema.training and ema is not trainer.model
    np.testing.assert_array_equal(ema.conv.weight.detach().numpy(), trainer.ema_params()["conv.weight"])
    assert trainer.model.training  # training goes on with the original

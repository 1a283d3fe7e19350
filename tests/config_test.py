"""The run configs: every paper config builds, tiny variants exist, unknown keys are errors."""
import subprocess
import sys

import pytest

from iln_jax import models
from iln_jax.errors import ConfigError
from iln_jax.layers.norms import NORMS
from iln_jax.train import load_config, validate_config
from train_util import ROOT

TASKS = ["task=sr,scale=2", "task=sr,scale=4", "task=dn,sigma=15", "task=dn,sigma=25",
         "task=car,quality=10", "task=car,quality=40", "task=dr"]
BACKBONES = ["configs/swinir.py:", "configs/hat.py:", "configs/hat.py:variant=hat-mini,", "configs/drct.py:"]


def _load(spec):
    return load_config(str(ROOT / spec))


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("norm", NORMS)
def test_paper_grid_configs(backbone, norm):
    for task in TASKS:
        c = _load(f"{backbone}{task},norm={norm}")
        validate_config(c)
        assert c.model.norm == norm and c.model.arch in models.archs()
        assert c.model.kwargs.stdnorm == (norm == "iln")
        # the paper's recipe
        assert (c.optim.optimizer, c.optim.lr, c.optim.b1, c.optim.b2) == ("adam", 2e-4, 0.9, 0.99)
        assert c.loss.pixel == "l1" and c.optim.ema_decay == 0.999 and c.train.num_steps == 300_000
        assert c.optim.schedule == "multistep" and c.optim.milestones[0] == 250_000
        if c.data.task == "sr":
            assert c.data.patch_size * c.data.scale == {2: 64, 4: 128}[c.data.scale]
            assert c.eval.crop_border == c.data.scale and c.eval.test_y_channel
            assert c.model.kwargs.upscale == c.data.scale
        else:
            assert c.model.kwargs.upsampler == "" and c.eval.crop_border == 0
        if c.data.task == "dn":
            assert c.data.noise_sigma == int(task.split("=")[-1])
        if c.data.task == "car":
            assert c.data.jpeg_quality == int(task.split("=")[-1])
        # every config has a tiny variant that builds
        tiny = _load(f"{backbone}{task},norm={norm},tiny=1")
        assert tiny.name == c.name + "_tiny" and tiny.model.kwargs.embed_dim == 8


def test_official_hat_mini_recipe():
    c = _load("configs/hat_mini_iln.py:scale=4")
    k = c.model.kwargs
    assert (c.model.arch, c.model.norm, k.embed_dim, k.window_size, k.compress_ratio, k.squeeze_factor) == \
        ("hat", "iln", 96, 16, 24, 24)
    assert k.stdnorm and tuple(k.depths) == (6,) * 6 and k.upscale == 4
    assert (c.data.patch_size, c.data.batch_size, c.seed) == (32, 16, 1)
    assert tuple(c.optim.milestones) == (250_000, 400_000, 450_000, 475_000) and c.optim.gamma == 0.5
    assert c.train.checkpoint_every == 20_000 and c.eval.every == 20_000
    assert not _load("configs/hat_mini_iln.py:scale=2,norm=layernorm").model.kwargs.stdnorm


def test_tiny_models_build():
    """Every backbone's tiny variant initialises (archs that are registered)."""
    import jax
    import jax.numpy as jnp
    from iln_jax.train import build_model
    for backbone in BACKBONES:
        c = _load(f"{backbone}tiny=1")
        p = c.data.patch_size
        shapes = jax.eval_shape(lambda: build_model(c).init(jax.random.key(0), jnp.zeros((1, p, p, 3))))
        assert shapes["params"]


def test_default_config():
    c = _load("configs/default.py")
    validate_config(c)
    assert (c.model.arch, c.model.norm, c.data.source, c.data.task) == ("swinir", "iln", "embedded", "sr")


def test_unknown_keys_are_errors():
    c = _load("configs/swinir.py:tiny=1")
    with pytest.raises(AttributeError, match='"learning_rate" does not exist.*locked'):
        c.optim.learning_rate = 1e-3
    with pytest.raises(ValueError, match=r"Unknown config argument 'taks'.*valid: .*task"):
        _load("configs/swinir.py:taks=sr")
    with pytest.raises(ValueError, match=r"Unknown task 'sisr'"):
        _load("configs/swinir.py:task=sisr")
    with pytest.raises(ValueError, match=r"Unknown HAT variant"):
        _load("configs/hat.py:variant=hat-xl")
    c = _load("configs/swinir.py:tiny=1")
    c.train.parallel = "ddp"
    with pytest.raises(ValueError, match=r"train.parallel 'ddp'; valid: mesh, pmap"):
        validate_config(c)


def test_command_line_rejects_unknown_override(tmp_path):
    """train.py's --config.x=... on a key that does not exist fails before anything runs; the config
    file is found from another directory (``configs/`` of the repository)."""
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", "configs/swinir.py:tiny=1",
                        "--config.optim.learning_rate=1e-3", f"--workdir={tmp_path / 'run'}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "optim has no 'learning_rate'" in r.stderr and not (tmp_path / "run").exists()


USER_CONFIG = """from configs import common


def get_config(arg=None):
    c = common.base_config()
    c.name = f"mine_{arg}"
    return c
"""
# A user's own package of configs: absolute and relative imports of its modules.
LAB_RECIPE = "from configs import common\nNAME = 'lab'\n"
LAB_RUN = """from lab_configs import recipe
from . import recipe as same


def get_config(arg=None):
    c = recipe.common.base_config()
    c.name = f"{recipe.NAME}_{same is recipe}"
    return c
"""


def test_config_files_load_from_their_path_without_sys_path_edits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    (tmp_path / "mine.py").write_text(USER_CONFIG)
    lab = tmp_path / "lab_configs"
    lab.mkdir()
    (lab / "__init__.py").write_text("")
    (lab / "recipe.py").write_text(LAB_RECIPE)
    (lab / "run.py").write_text(LAB_RUN)
    try:
        assert load_config("configs/swinir.py:tiny=1").name == "swinir_srx2_iln_tiny"  # from the repository
        assert load_config("mine.py:x").name == "mine_x"  # next to the command, importing configs.common
        assert load_config(str(lab / "run.py")).name == "lab_True"
        with pytest.raises(ConfigError, match=r"config file 'nope.py' not found \(looked in .* and in "):
            load_config("nope.py")
    finally:
        for name in [m for m in sys.modules if m.startswith(("lab_configs", "_iln_config_mine"))]:
            del sys.modules[name]
    assert sys.path == path_before

"""Bad input anywhere is one line naming the file or key and what was expected, no traceback:
config keys and model arguments (train.py), training images (with data.on_bad_image=skip the run
goes on), evaluation folders and images (eval.py --on-bad-image), PyTorch .pth files."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from iln_jax import models
from iln_jax.convert.state_dict import load_state_dict
from iln_jax.data.images import BadImageError
from iln_jax.errors import CheckpointError, ConfigError, IlnJaxError
from iln_jax.evaluation import convention
from iln_jax.evaluation.evaluate import measurable
from iln_jax.train import train_and_evaluate
from train_util import ROOT, tiny_config, worker_env


def _cli(*args) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=worker_env(1), capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("args, code, message", [
    (["--config.train.checkpoint_evry=5"], 2,
     "[train] error: unknown config key 'train.checkpoint_evry': train has no 'checkpoint_evry'; did you mean "
     "checkpoint_every? (from --config.train.checkpoint_evry=5)"),
    (["--config.model.kwargs.num_heads=(3,)"], 2,
     "[train] error: config model.kwargs: swinir: num_heads[0]=3 does not divide embed_dim=8 (each head gets "
     "embed_dim / num_heads channels)"),
])
def test_train_cli_prints_one_line(tmp_path, args, code, message):
    rc, out, err = _cli("train.py", "--config", "configs/swinir.py:tiny=1", "--workdir", str(tmp_path / "run"), *args)
    assert (rc, err.strip()) == (code, message), out + err
    assert not (tmp_path / "run").exists()  # refused before touching the work directory


def test_eval_cli_prints_one_line(tmp_path):
    import torch
    bad = tmp_path / "model.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(8, 3, 3, 3)}}, bad)
    bad.write_bytes(bad.read_bytes()[:-100])  # an interrupted download
    rc, out, err = _cli("eval.py", "--pth", str(bad), "--variant", "swinir-classical")
    assert rc == 1 and err.strip() == (f"[eval] error: Could not read {bad} as a PyTorch checkpoint: not a "
                                       f"torch.save file, or damaged/truncated (RuntimeError: PytorchStreamReader "
                                       f"failed reading zip archive: failed finding central directory)"), out + err


def _images(folder, bad: dict):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).save(folder / f"{i}.png")
    for name, data in bad.items():
        if isinstance(data, bytes):
            (folder / name).write_bytes(data)
        else:
            Image.fromarray(data).save(folder / name)
    return folder


def test_bad_training_image_is_one_error_or_skipped(tmp_path, caplog):
    folder = _images(tmp_path / "train", {"3broken.png": b"\x89PNG truncated", "4tiny.png": np.zeros((6, 6, 3), np.uint8)})
    overrides = {"data.source": "folder", "data.root": str(folder), "train.num_steps": 2, "eval.every": -1,
                 "train.diagnostics_every": 0}
    with pytest.raises(BadImageError, match=rf"{folder}/(3broken.png: cannot identify|4tiny.png is 6x6, smaller)") as e:
        train_and_evaluate(tiny_config(**overrides), tmp_path / "strict")
    assert "\n" not in str(e.value) and not (tmp_path / "strict" / "LOCK").exists()
    with caplog.at_level(logging.WARNING):
        summary = train_and_evaluate(tiny_config(**overrides, **{"data.on_bad_image": "skip"}), tmp_path / "skip")
    assert summary["status"] == "completed"
    assert "3broken.png" in caplog.text and "4tiny.png is 6x6, smaller than the 16x16 target patch" in caplog.text


def test_eval_images_too_small_to_measure(tmp_path, caplog):
    conv = convention("sr", 4)
    images = [{"name": "ok", "gt": np.zeros((19, 40, 3))}, {"name": "small", "gt": np.zeros((18, 40, 3))}]
    with pytest.raises(BadImageError, match=r"^Set5/small: the target is 18x40, too small to measure \(PSNR/SSIM need "
                                            r"11x11 after cropping 4 px per side\)$"):
        measurable(images, conv, dataset="Set5")
    with caplog.at_level(logging.WARNING):
        assert [im["name"] for im in measurable(images, conv, dataset="Set5", on_bad_image="skip")] == ["ok"]
    assert "Set5/small" in caplog.text


@pytest.mark.parametrize("kwargs, message", [
    (dict(embed_dim=12, num_heads=(5,), depths=(2,)), "swinir: num_heads[0]=5 does not divide embed_dim=12"),
    (dict(depths=(2, 2), num_heads=(2,)), "swinir: depths (length 2) and num_heads (length 1) need one entry per group"),
    (dict(upscale=5, upsampler="pixelshuffle"), "swinir: upscale=5 with upsampler 'pixelshuffle': use a power of 2 or 3"),
    (dict(window_size=0), "swinir: window_size=0 must be a positive number"),
])
def test_invalid_model_arguments_fail_before_tracing(kwargs, message):
    with pytest.raises(ConfigError) as e:
        models.create("swinir", **kwargs)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"hello", r"not a torch.save file: it is a text file, starting 'hello'$"),
    (b"\x80\x02garbage", r"not a torch.save file, or damaged/truncated \(\w+"),
])
def test_bad_pth_files(tmp_path, content, message):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"^Could not read {path} as a PyTorch checkpoint: {message}"):
        load_state_dict(str(path))
    with pytest.raises(FileNotFoundError, match=f"Checkpoint not found: {tmp_path}/missing.pth"):
        load_state_dict(os.fspath(tmp_path / "missing.pth"))


def test_project_errors_keep_their_builtin_bases():
    """Code that caught ValueError / FileNotFoundError before still catches them."""
    from iln_jax.errors import CheckpointNotFoundError, DataError, DataNotFoundError, StorageError
    assert issubclass(BadImageError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(DataNotFoundError, FileNotFoundError) and issubclass(CheckpointNotFoundError, FileNotFoundError)
    assert issubclass(StorageError, OSError) and issubclass(models.UnknownArgumentError, TypeError)
    assert all(issubclass(c, IlnJaxError) for c in (BadImageError, StorageError, ConfigError))

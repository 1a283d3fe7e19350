"""Validation sets: embedded held-out photos and benchmark folders, with deterministic inputs."""
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from iln_jax.data import BadImageError, default_config, make_eval_set

SET5 = ("baby", "bird", "butterfly", "head", "woman")


def _config(**overrides):
    config = default_config()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _uint8(x):
    return np.round(x * 255).astype(np.uint8)


@pytest.mark.parametrize("task,scale,lq_side", [("sr", 3, 80), ("dn", 1, 240), ("car", 1, 240), ("dr", 1, 240)])
def test_embedded_eval_set_is_held_out_and_deterministic(task, scale, lq_side):
    config = _config(task=task, scale=scale, noise_sigma=[0, 50], jpeg_quality=[10, 30])
    first, second = make_eval_set(config), make_eval_set(config)
    assert [e["name"] for e in first] == ["astronaut", "coffee", "chelsea"]
    for a, b in zip(first, second):
        assert a["gt"].shape == (240, 240, 3) and a["lq"].shape == (lq_side, lq_side, 3)
        assert a["lq"].dtype == a["gt"].dtype == np.float32
        np.testing.assert_array_equal(a["lq"], b["lq"])
    if task == "dn":  # blind range [0, 50] evaluates at sigma 25, unclipped
        noise = first[0]["lq"] - first[0]["gt"]
        assert abs(float(noise.std()) - 25 / 255) < 0.003 and first[0]["lq"].min() < 0


def test_gray_eval_uses_y_for_jpeg():
    config = _config(task="car", channels=1, jpeg_quality=40)
    for example in make_eval_set(config):
        assert example["gt"].shape == (240, 240, 1)
        assert 16 <= _uint8(example["gt"]).min() and _uint8(example["gt"]).max() <= 235  # BT.601 Y range


@pytest.mark.parametrize("scale", [2, 4])
def test_set5_hr_only_degrades_to_the_matlab_lr_images(data_dir, scale):
    """Known answer: LR made on the fly equals Set5's MATLAB LR_bicubic images bit for bit."""
    on_the_fly = make_eval_set(_config(scale=scale, eval_source="folder", eval_root=str(data_dir / "Set5" / "HR")))
    paired = make_eval_set(_config(scale=scale, eval_source="folder", eval_root=str(data_dir / "Set5" / "HR"),
                                   eval_lr_root=str(data_dir / "Set5" / "LR_bicubic" / f"X{scale}")))
    assert [e["name"] for e in on_the_fly] == [e["name"] for e in paired] == list(SET5)
    for a, b in zip(on_the_fly, paired):
        np.testing.assert_array_equal(a["gt"], b["gt"])
        np.testing.assert_array_equal(_uint8(a["lq"]), _uint8(b["lq"]), err_msg=a["name"])
        assert a["gt"].shape[0] == a["lq"].shape[0] * scale


def test_benchmark_folder_mismatch_and_unpaired_files_are_named(data_dir, tmp_path):
    set5 = data_dir / "Set5"
    with pytest.raises(ValueError, match=r"(?s)without an input.*HR/baby.png.*may carry an 'x4' suffix"):
        make_eval_set(_config(scale=4, eval_source="folder", eval_root=str(set5 / "HR"),
                              eval_lr_root=str(set5 / "LR_bicubic" / "X3")))
    os.makedirs(tmp_path / "X3_as_x4")
    for name in SET5:
        shutil.copy(set5 / "LR_bicubic" / "X3" / f"{name}x3.png", tmp_path / "X3_as_x4" / f"{name}x4.png")
    with pytest.raises(BadImageError, match=r"babyx4.png is 170x170, so .*HR/baby.png should be 680..683"):
        make_eval_set(_config(scale=4, eval_source="folder", eval_root=str(set5 / "HR"),
                              eval_lr_root=str(tmp_path / "X3_as_x4")))
    shutil.copytree(set5 / "LR_bicubic" / "X2", tmp_path / "X2")
    os.remove(tmp_path / "X2" / "birdx2.png")
    with pytest.raises(ValueError, match=r"HR/bird.png"):
        make_eval_set(_config(scale=2, eval_source="folder", eval_root=str(set5 / "HR"),
                              eval_lr_root=str(tmp_path / "X2")))


def test_deraining_benchmark_folder_and_skip_of_bad_files(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for name in ("rain-1.png", "rain-2.png"):
        for sub in ("input", "target"):
            os.makedirs(tmp_path / sub, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / sub / name)
    (tmp_path / "input" / "rain-3.png").write_bytes(b"broken")
    (tmp_path / "target" / "rain-3.png").write_bytes(b"broken")
    config = _config(task="dr", eval_source="folder", eval_root=str(tmp_path))
    with pytest.raises(BadImageError, match="rain-3.png"):
        make_eval_set(config)
    config.on_bad_image = "skip"
    with caplog.at_level(logging.WARNING):
        evaluation = make_eval_set(config)
    assert [e["name"] for e in evaluation] == ["rain-1", "rain-2"]
    assert "left 1 unusable image(s) out" in caplog.text and "rain-3.png" in caplog.text

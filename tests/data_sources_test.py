"""Folder layouts, TFDS builders and the embedded photos: pairing, sizes and layout errors."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from iln_jax.data import embedded, images, sources, tfds_builders
from iln_jax.data.imresize import imresize


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(folder, name, array):
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(array).save(os.path.join(folder, name))


def _df2k_like(root, hr_dir, lr_dir, names, scale, lr_suffix=True):
    hrs = {}
    for i, name in enumerate(names):
        hr = _image(12 * scale, 10 * scale + i * scale, seed=i)
        _write(os.path.join(root, hr_dir), f"{name}.png", hr)
        lr_name = f"{name}x{scale}.png" if lr_suffix else f"{name}.png"
        _write(os.path.join(root, lr_dir), lr_name, imresize(hr, 1 / scale))
        hrs[name] = hr
    return hrs


def _folder_source(task, root, lr_root=None, scale=1, channels=3):
    return sources.FolderSource.from_folders(task, str(root), None if lr_root is None else str(lr_root),
                                             scale=scale, channels=channels, gray="y")


def test_sr_pairs_by_name_with_or_without_scale_suffix(tmp_path):
    hrs = _df2k_like(tmp_path, "HR", "X2", ["0001", "0002"], 2)
    _df2k_like(tmp_path, "HR_sub", "X2_sub", ["0001_s001", "0001_s002"], 2, lr_suffix=False)
    for hr_dir, lr_dir in [("HR", "X2"), ("HR_sub", "X2_sub")]:
        source = _folder_source("sr", tmp_path / hr_dir, tmp_path / lr_dir, scale=2)
        assert len(source) == 2 and source.paired
    source = _folder_source("sr", tmp_path / "HR", tmp_path / "X2", scale=2)
    example = source.load(1)
    assert example.name == "0002" and example.lq.shape == (12, 11, 3)
    np.testing.assert_array_equal(example.gt, hrs["0002"])
    assert "0002x2.png" in example.lq_label and "0002.png" in example.gt_label


def test_hr_larger_than_scale_times_lr_is_modcropped_but_mismatch_names_both_files(tmp_path):
    _write(tmp_path / "HR", "a.png", _image(25, 21))  # 12x10 LR at x2 + 1 extra pixel: accepted
    _write(tmp_path / "LR", "ax2.png", _image(12, 10))
    example = _folder_source("sr", tmp_path / "HR", tmp_path / "LR", scale=2).load(0)
    assert example.gt.shape == (24, 20, 3)
    _write(tmp_path / "LR", "ax2.png", _image(11, 10))
    with pytest.raises(images.BadImageError, match=r"LR/ax2.png is 11x10.*HR/a.png.*25x21"):
        _folder_source("sr", tmp_path / "HR", tmp_path / "LR", scale=2).load(0)


def test_unpaired_files_are_named(tmp_path):
    _df2k_like(tmp_path, "HR", "LR", ["0001", "0002"], 2)
    _write(tmp_path / "LR", "0003x2.png", _image(4, 4))
    os.remove(tmp_path / "LR" / "0001x2.png")
    with pytest.raises(ValueError, match=r"(?s)HR/0001.png.*LR/0003x2.png"):
        _folder_source("sr", tmp_path / "HR", tmp_path / "LR", scale=2)


def test_empty_and_missing_folders_describe_the_expected_layout(tmp_path):
    (tmp_path / "empty" / "DF2K_HR_sub").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"(?s)no images.*DF2K_HR_sub.*Expected layout: root = the HR folder"):
        _folder_source("sr", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist. Expected layout"):
        _folder_source("dn", tmp_path / "nowhere")
    _write(tmp_path / "rain", "1.png", _image(8, 8))
    with pytest.raises(FileNotFoundError, match="lacks input/ and target/.*Rain13K"):
        _folder_source("dr", tmp_path / "rain")


def test_rain13k_layout_pairs_input_and_target(tmp_path):
    for name in ["1.jpg", "2.png"]:
        _write(tmp_path / "input", name, _image(9, 7))
        _write(tmp_path / "target", name, _image(9, 7, seed=1))
    source = _folder_source("dr", tmp_path)
    assert len(source) == 2
    example = source.load(0)
    assert example.lq.shape == example.gt.shape == (9, 7, 3) and example.name == "1"


def test_gray_and_rgba_files_take_the_task_channels(tmp_path):
    Image.fromarray(_image(8, 8)[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.concatenate([_image(8, 8), _image(8, 8)[..., :1]], -1)).save(tmp_path / "rgba.png")
    assert all(_folder_source("dn", tmp_path).load(i).gt.shape == (8, 8, 3) for i in range(2))
    assert all(_folder_source("dn", tmp_path, channels=1).load(i).gt.shape == (8, 8, 1) for i in range(2))


def test_embedded_split_is_disjoint_and_retina_border_is_cropped():
    train = embedded.EmbeddedSource("train", channels=3, gray="y")
    evaluation = embedded.EmbeddedSource("eval", channels=1, gray="y")
    assert not set(embedded.TRAIN_PHOTOS) & set(embedded.EVAL_PHOTOS)
    assert len(train) == 5 and len(evaluation) == 3
    retina = train.load(embedded.TRAIN_PHOTOS.index("retina")).gt
    assert retina.shape == (960, 960, 3) and (retina.max(axis=-1) < 10).mean() < 0.01
    assert evaluation.load(0).gt.shape == (240, 240, 1) and evaluation.load(0).name == "astronaut"


def test_tfds_df2k_and_rain13k_prepare_from_manual_dir_and_read_like_folders(tmp_path):
    hrs = _df2k_like(tmp_path / "manual", "DF2K_HR", "DF2K_LR_bicubic/X2", ["0001", "0002", "0003"], 2)
    data_dir = str(tmp_path / "tfds")
    paired = tfds_builders.open_source("df2k/x2", data_dir, manual_dir=str(tmp_path / "manual"), channels=3, gray="y")
    assert paired.paired and len(paired) == 3
    by_name = {paired.load(i).name: paired.load(i) for i in range(3)}
    manual = tmp_path / "manual"
    folder = _folder_source("sr", manual / "DF2K_HR", manual / "DF2K_LR_bicubic" / "X2", scale=2)
    for i in range(3):
        expected = folder.load(i)
        np.testing.assert_array_equal(by_name[expected.name].gt, hrs[expected.name])
        np.testing.assert_array_equal(by_name[expected.name].lq, expected.lq)
    # Prepared once: reopening needs no manual_dir.
    assert len(tfds_builders.open_source("df2k/x2", data_dir, manual_dir=None, channels=1, gray="y")) == 3
    hr_only = tfds_builders.open_source("df2k/hr", data_dir, manual_dir=str(tmp_path / "manual"), channels=3, gray="y")
    assert not hr_only.paired and hr_only.load(0).lq is None

    # Sources travel to grain worker processes by pickling.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(paired)).load(0).lq, paired.load(0).lq)

    for name in ["a.png", "b.png"]:
        _write(tmp_path / "derain" / "train" / "Rain13K" / "input", name, _image(8, 9))
        _write(tmp_path / "derain" / "train" / "Rain13K" / "target", name, _image(8, 9, seed=2))
    rain = tfds_builders.open_source("rain13k", data_dir, manual_dir=str(tmp_path / "derain"), channels=3, gray="y")
    assert len(rain) == 2 and rain.load(0).lq.shape == (8, 9, 3)


def test_tfds_missing_manual_dir_or_layout_says_what_is_expected(tmp_path):
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match=r"(?s)not prepared.*prepare_tfds df2k/x3.*DF2K_HR_sub"):
        tfds_builders.open_source("df2k/x3", data_dir, manual_dir=None, channels=3, gray="y")
    with pytest.raises(FileNotFoundError, match=r"(?s)manual_dir .*nowhere does not exist.*DIV2K_train_HR"):
        tfds_builders.open_source("df2k/x3", data_dir, manual_dir=str(tmp_path / "nowhere"), channels=3, gray="y")
    _write(tmp_path / "wrong", "0001.png", _image(6, 6))
    with pytest.raises(FileNotFoundError, match=r"(?s)no DF2K folders in .*wrong.*0001.png.*DF2K_LR_bicubic"):
        tfds_builders.open_source("df2k/x3", data_dir, manual_dir=str(tmp_path / "wrong"), channels=3, gray="y")
    _write(tmp_path / "hr_only" / "DF2K_HR_sub", "0001_s001.png", _image(6, 6))
    with pytest.raises(FileNotFoundError, match="not the x3 LR folder"):
        tfds_builders.open_source("df2k/x3", data_dir, manual_dir=str(tmp_path / "hr_only"), channels=3, gray="y")
    with pytest.raises(FileNotFoundError, match="no Rain13K input/ \\+ target/"):
        tfds_builders.open_source("rain13k", data_dir, manual_dir=str(tmp_path / "wrong"), channels=3, gray="y")


def test_tfds_prepare_checks_lr_hr_sizes(tmp_path):
    _write(tmp_path / "DIV2K_train_HR", "0001.png", _image(12, 12))
    _write(tmp_path / "DIV2K_train_LR_bicubic" / "X2", "0001x2.png", _image(5, 6))
    with pytest.raises(images.BadImageError, match=r"0001x2.png is 5x6.*0001.png"):
        tfds_builders.open_source("df2k/x2", str(tmp_path / "tfds"), manual_dir=str(tmp_path), channels=3, gray="y")

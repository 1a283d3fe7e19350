"""scripts/extract_subimages.py cuts images on BasicSR's grid and keeps LR and HR sub-images paired."""
import importlib.util
import pathlib

import numpy as np
import pytest
from PIL import Image

from iln_jax.data.imresize import imresize

_SCRIPT = pathlib.Path(__file__).parents[1] / "scripts" / "extract_subimages.py"
_spec = importlib.util.spec_from_file_location("extract_subimages", _SCRIPT)
extract_subimages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(extract_subimages)


def test_crop_positions_follow_basicsr():
    np.testing.assert_array_equal(extract_subimages.crop_positions(1356, 480, 240, 0), [0, 240, 480, 720, 876])
    np.testing.assert_array_equal(extract_subimages.crop_positions(960, 480, 240, 0), [0, 240, 480])
    np.testing.assert_array_equal(extract_subimages.crop_positions(1000, 480, 240, 100), [0, 240, 480])
    assert len(extract_subimages.crop_positions(100, 480, 240, 0)) == 0


def test_df2k_mode_makes_paired_sub_images(tmp_path):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (1080, 1000, 3), dtype=np.uint8)  # crops at rows 0/240/480/600, columns 0/240/480/520
    (tmp_path / "DF2K_HR").mkdir()
    (tmp_path / "DF2K_LR_bicubic" / "X4").mkdir(parents=True)
    Image.fromarray(hr).save(tmp_path / "DF2K_HR" / "0001.png")
    lr = imresize(hr, 1 / 4)
    Image.fromarray(lr).save(tmp_path / "DF2K_LR_bicubic" / "X4" / "0001x4.png")
    extract_subimages.extract_df2k(str(tmp_path), [4], thresh_size=0, workers=1)
    hr_subs = sorted(p.name for p in (tmp_path / "DF2K_HR_sub").iterdir())
    lr_subs = sorted(p.name for p in (tmp_path / "DF2K_bicx4_sub").iterdir())
    assert hr_subs == lr_subs and len(hr_subs) == 4 * 4 and hr_subs[0] == "0001_s001.png"
    # Row-major numbering: s006 = second row (top 240), second column (left 240); s016 = the last corner.
    for name, top, left in [("0001_s006.png", 240, 240), ("0001_s016.png", 600, 520)]:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "DF2K_HR_sub" / name)),
                                      hr[top:top + 480, left:left + 480])
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "DF2K_bicx4_sub" / name)),
                                      lr[top // 4:top // 4 + 120, left // 4:left // 4 + 120])
    with pytest.raises(SystemExit, match="already exists"):
        extract_subimages.extract_df2k(str(tmp_path), [4], thresh_size=0, workers=1)


def test_df2k_mode_rejects_lr_that_is_not_exactly_one_scale_of_hr(tmp_path):
    (tmp_path / "DF2K_HR").mkdir()
    (tmp_path / "DF2K_LR_bicubic" / "X2").mkdir(parents=True)
    Image.fromarray(np.zeros((101, 100, 3), np.uint8)).save(tmp_path / "DF2K_HR" / "a.png")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "DF2K_LR_bicubic" / "X2" / "ax2.png")
    with pytest.raises(SystemExit, match="a.png is 101x100 but .*ax2.png is 50x50"):
        extract_subimages.extract_df2k(str(tmp_path), [2], thresh_size=0, workers=1)

"""Decoding: every file mode becomes uint8 HWC with the task's channels; bad files are named."""
import numpy as np
import pytest
from PIL import Image

from iln_jax.data import images


def _save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def test_rgb_gray_rgba_palette_and_16bit_files(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    rgba = np.concatenate([rgb, np.full((6, 5, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(images.read_image(_save(tmp_path / "a.png", rgb), "a", 3, "y"), rgb)
    np.testing.assert_array_equal(images.read_image(_save(tmp_path / "b.png", rgba), "b", 3, "y"), rgb)
    np.testing.assert_array_equal(images.read_image(_save(tmp_path / "c.png", gray), "c", 3, "y"),
                                  np.repeat(gray[..., None], 3, -1))
    np.testing.assert_array_equal(images.read_image(str(tmp_path / "c.png"), "c", 1, "y"), gray[..., None])
    Image.fromarray(rgb).convert("P").save(tmp_path / "d.png")
    assert images.read_image(str(tmp_path / "d.png"), "d", 3, "y").shape == (6, 5, 3)
    sixteen = (gray.astype(np.uint16) * 257)
    np.testing.assert_array_equal(images.read_image(_save(tmp_path / "e.png", sixteen), "e", 1, "y"), gray[..., None])


def test_rgb_to_gray_conversions_known_values():
    white_black = np.array([[[255, 255, 255], [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(images.rgb_to_gray(white_black, "y")[..., 0], [[235, 16]])  # BT.601 studio range
    np.testing.assert_array_equal(images.rgb_to_gray(white_black, "luma")[..., 0], [[255, 0]])
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert images.rgb_to_gray(red, "y")[0, 0, 0] == round(16 + 65.481)
    assert images.rgb_to_gray(red, "luma")[0, 0, 0] == round(0.299 * 255)


def test_corrupt_truncated_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    with pytest.raises(images.BadImageError, match="garbage.png"):
        images.read_image(str(tmp_path / "garbage.png"), str(tmp_path / "garbage.png"), 3, "y")
    good = _save(tmp_path / "good.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = open(good, "rb").read()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(images.BadImageError, match="truncated.png"):
        images.read_image(str(tmp_path / "truncated.png"), str(tmp_path / "truncated.png"), 3, "y")
    with pytest.raises(images.BadImageError, match="missing.png"):
        images.read_image(str(tmp_path / "missing.png"), str(tmp_path / "missing.png"), 3, "y")
    with pytest.raises(images.BadImageError, match="record 7"):
        images.read_image(b"\x89PNG broken", "record 7", 3, "y")


def test_list_images_ignores_other_files(tmp_path):
    for name in ["b.png", "a.JPG", ".hidden.png", "meta_info.txt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.rsplit("/", 1)[1] for p in images.list_images(str(tmp_path))] == ["a.JPG", "b.png"]

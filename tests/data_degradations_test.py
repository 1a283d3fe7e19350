"""Degradations made on the fly must equal the way the field makes its data (and be seeded)."""
import io

import numpy as np
import pytest
from PIL import Image

from iln_jax.data import default_config, degradations, transforms
from iln_jax.data.imresize import imresize, modcrop


def _photo_like(shape, seed=0):
    """Smooth uint8 content (random noise would make every resampling test trivially sensitive)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(shape[0] // 8 + 2, shape[1] // 8 + 2, shape[2]), dtype=np.uint8)
    big = imresize(small, 8)
    return np.ascontiguousarray(big[:shape[0], :shape[1]])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_lr_patch_equals_crop_of_whole_image_lr(scale):
    hr = _photo_like((77, 91, 3), seed=scale)  # not a multiple of the scale: modcrop is implied
    full_lr = imresize(modcrop(hr, scale), 1 / scale)
    lr_h, lr_w = full_lr.shape[:2]
    for top, left, size in [(0, 0, 8), (lr_h - 8, lr_w - 8, 8), (5, 7, 9), (1, lr_w - 10, 10), (0, 0, min(lr_h, lr_w))]:
        patch = degradations.bicubic_lr_patch(hr, scale, top, left, size, size)
        np.testing.assert_array_equal(patch, full_lr[top:top + size, left:left + size], err_msg=f"{top},{left}")


def test_bicubic_lr_patch_rejects_patch_outside_image():
    with pytest.raises(ValueError, match="outside"):
        degradations.bicubic_lr_patch(np.zeros((16, 16, 3), np.uint8), 2, 4, 4, 8, 8)


def test_gaussian_noise_is_unclipped_seeded_and_has_sigma():
    img = np.full((64, 64, 3), 0.5, np.float32)
    a = degradations.gaussian_noise(img, 50, np.random.default_rng(1))
    b = degradations.gaussian_noise(img, 50, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32
    assert abs(float(np.std(a - img)) - 50 / 255) < 0.01
    edge = degradations.gaussian_noise(np.zeros((64, 64, 1), np.float32), 25, np.random.default_rng(0))
    assert edge.min() < 0  # not clipped, as KAIR/SwinIR/Restormer


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_equals_pillow_encode_decode(channels):
    img = _photo_like((40, 48, 3))
    if channels == 1:
        img = img[..., :1]
    out = degradations.jpeg(img, 10)
    buffer = io.BytesIO()
    Image.fromarray(img[..., 0] if channels == 1 else img).save(buffer, format="JPEG", quality=10)
    expected = np.asarray(Image.open(buffer))
    np.testing.assert_array_equal(out, expected.reshape(out.shape))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() > 1  # q=10 visibly changes the image
    assert np.abs(degradations.jpeg(img, 95).astype(int) - img).mean() < np.abs(out.astype(int) - img).mean()


def test_synthetic_rain_is_seeded_brightening_and_in_range():
    img = _photo_like((64, 80, 3))
    a = degradations.synthetic_rain(img, np.random.default_rng(3))
    np.testing.assert_array_equal(a, degradations.synthetic_rain(img, np.random.default_rng(3)))
    assert a.dtype == np.float32 and a.shape == img.shape
    assert 0.0 <= a.min() and a.max() <= 1.0
    clean = degradations.to_float(img)
    assert np.all(a >= clean - 1e-7)  # additive streaks only brighten
    assert (a > clean + 0.05).mean() > 0.005  # and there are streaks
    assert not np.array_equal(a, degradations.synthetic_rain(img, np.random.default_rng(4)))


def test_degradation_levels_from_config():
    config = default_config()
    config.task, config.noise_sigma, config.jpeg_quality = "dn", [0, 50], [10, 40]
    degradation = degradations.Degradation.from_config(config)
    assert degradation.scale == 1 and degradation.noise_sigma == (0.0, 50.0)
    assert degradation.jpeg_quality == (10, 40) and degradation.gray == "luma"
    clean = np.full((128, 128, 1), 128, np.uint8)
    evaluation = degradation.make_input(clean, np.random.default_rng(0), evaluation=True)
    assert abs(float(np.std(evaluation)) - 25 / 255) < 0.005  # midpoint of the blind range
    sigmas = [float(np.std(degradation.make_input(clean, np.random.default_rng(i)))) * 255 for i in range(20)]
    assert 0 <= min(sigmas) and max(sigmas) <= 51 and np.std(sigmas) > 5  # drawn per sample


def test_sr_make_input_is_matlab_bicubic_of_modcropped_image():
    config = default_config()
    config.scale = 3
    hr = _photo_like((50, 62, 3))
    lq = degradations.Degradation.from_config(config).make_input(hr, np.random.default_rng(0))
    np.testing.assert_array_equal(np.round(lq * 255).astype(np.uint8), imresize(modcrop(hr, 3), 1 / 3))


def test_dihedral_transforms_are_the_eight_distinct_ones():
    img = np.arange(12).reshape(3, 4, 1)
    outs = [transforms.dihedral([img], k)[0] for k in range(8)]
    assert len({(o.shape, o.tobytes()) for o in outs}) == 8
    assert all(o.flags.c_contiguous for o in outs)

"""PSNR/SSIM must reproduce the field's published conventions (BasicSR/MATLAB), checked on known answers."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from iln_jax.data.imresize import imresize, modcrop
from iln_jax.metrics import psnr, psnr_jax, rgb_to_y, ssim, ssim_jax, to_uint8_image

# Set5 x4, MATLAB LR -> MATLAB-style bicubic x4 -> uint8, Y channel, crop 4 (reference/METRICS.md).
SET5_X4_BICUBIC_PSNR_Y = {
    "baby": 31.7861, "bird": 30.1843, "butterfly": 22.0995, "head": 31.6151, "woman": 26.4677,
}
SET5_X4_BICUBIC_MEAN_PSNR_Y = 28.4305
SET5_X4_BICUBIC_MEAN_SSIM_Y = 0.81126
SCALE = 4


@pytest.fixture(scope="module")
def set5_x4_bicubic(data_dir):
    """{name: (bicubic-upscaled uint8, modcropped HR uint8)}, made the way the known answers were."""
    pairs = {}
    for name in SET5_X4_BICUBIC_PSNR_Y:
        hr = np.asarray(Image.open(data_dir / "Set5" / "HR" / f"{name}.png"))
        lr = np.asarray(Image.open(data_dir / "Set5" / "LR_bicubic" / f"X{SCALE}" / f"{name}x{SCALE}.png"))
        upscaled = to_uint8_image(imresize(lr.astype(np.float64) / 255.0, SCALE))
        pairs[name] = (upscaled, modcrop(hr, SCALE))
    return pairs


@pytest.fixture(scope="module")
def set5_batch(set5_x4_bicubic):
    """The five pairs cropped to a common 224x224 so they form one (5, 224, 224, 3) batch."""
    upscaled, hr = zip(*(pair for pair in set5_x4_bicubic.values()))
    crop = lambda images: np.stack([image[:224, :224] for image in images])
    return crop(upscaled), crop(hr)


def test_set5_x4_bicubic_psnr_y_matches_known_answers(set5_x4_bicubic):
    values = {
        name: psnr(upscaled, hr, crop_border=SCALE, test_y_channel=True)
        for name, (upscaled, hr) in set5_x4_bicubic.items()
    }
    for name, expected in SET5_X4_BICUBIC_PSNR_Y.items():
        assert values[name] == pytest.approx(expected, abs=1e-4), name
    assert np.mean(list(values.values())) == pytest.approx(SET5_X4_BICUBIC_MEAN_PSNR_Y, abs=1e-4)


def test_set5_x4_bicubic_ssim_y_matches_known_answer(set5_x4_bicubic):
    values = [ssim(upscaled, hr, crop_border=SCALE, test_y_channel=True) for upscaled, hr in set5_x4_bicubic.values()]
    assert np.mean(values) == pytest.approx(SET5_X4_BICUBIC_MEAN_SSIM_Y, abs=1e-5)


def test_ssim_equals_skimage_with_basicsr_settings(set5_x4_bicubic):
    """skimage with these four arguments is an independent implementation of the same definition."""
    settings = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    for name, (upscaled, hr) in set5_x4_bicubic.items():
        y_up, y_hr = (rgb_to_y(image)[SCALE:-SCALE, SCALE:-SCALE] for image in (upscaled, hr))
        expected_y = structural_similarity(y_up, y_hr, **settings)
        assert ssim(upscaled, hr, crop_border=SCALE, test_y_channel=True) == pytest.approx(expected_y, abs=1e-10), name
        as_f64 = (image.astype(np.float64) for image in (upscaled, hr))
        expected_rgb = structural_similarity(*as_f64, channel_axis=2, **settings)
        assert ssim(upscaled, hr) == pytest.approx(expected_rgb, abs=1e-10), name


@pytest.mark.parametrize("test_y_channel", [False, True])
def test_jax_metrics_match_numpy_per_image(set5_batch, test_y_channel):
    """float32 JAX agrees with the float64 reference to the tolerances stated in the docstrings."""
    upscaled, hr = set5_batch
    kwargs = dict(crop_border=SCALE, test_y_channel=test_y_channel)
    as_f32 = lambda x: jnp.asarray(x, jnp.float32)
    psnr_expected = [psnr(a, b, **kwargs) for a, b in zip(upscaled, hr)]
    ssim_expected = [ssim(a, b, **kwargs) for a, b in zip(upscaled, hr)]
    np.testing.assert_allclose(psnr_jax(as_f32(upscaled), as_f32(hr), **kwargs), psnr_expected, rtol=0, atol=2e-5)
    np.testing.assert_allclose(ssim_jax(as_f32(upscaled), as_f32(hr), **kwargs), ssim_expected, rtol=0, atol=1e-5)


def test_jax_metrics_promote_uint8_instead_of_wrapping_around(set5_batch):
    upscaled, hr = set5_batch
    kwargs = dict(crop_border=SCALE, test_y_channel=True)
    as_f32 = lambda x: jnp.asarray(x, jnp.float32)
    # Wrapping around would move PSNR by dBs; the two programs fuse the conversion differently and may
    # sum in another order (SSIM 3e-6 apart with XLA:CPU's classic emitters).
    np.testing.assert_allclose(psnr_jax(upscaled, hr, **kwargs), psnr_jax(as_f32(upscaled), as_f32(hr), **kwargs),
                               rtol=1e-6)
    np.testing.assert_allclose(ssim_jax(upscaled, hr, **kwargs), ssim_jax(as_f32(upscaled), as_f32(hr), **kwargs),
                               rtol=1e-5)


def test_psnr_of_identical_images_is_inf():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert psnr(image, image) == math.inf
    assert np.all(np.isinf(psnr_jax(jnp.asarray(image[None], jnp.float32), jnp.asarray(image[None], jnp.float32))))


def test_psnr_uses_joint_mse_over_channels():
    """Errors of 0, 0 and 3 per channel give mse 3, not an average of per-channel PSNRs."""
    ref = np.zeros((4, 4, 3))
    img = ref + np.array([0.0, 0.0, 3.0])
    assert psnr(img, ref) == pytest.approx(10 * math.log10(255**2 / 3.0), abs=1e-12)


def test_ssim_of_identical_images_is_one():
    image = np.random.default_rng(1).uniform(0, 255, (20, 20, 3))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_grayscale_hw_equals_single_channel_hwc():
    rng = np.random.default_rng(2)
    img, ref = rng.uniform(0, 255, (2, 24, 24))
    assert psnr(img, ref, crop_border=2) == psnr(img[..., None], ref[..., None], crop_border=2)
    assert ssim(img, ref, crop_border=2) == ssim(img[..., None], ref[..., None], crop_border=2)


def test_rgb_to_y_is_bt601_studio_range_unrounded():
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [1, 2, 3]]], dtype=np.uint8)
    expected = [16.0, 235.0, 16.0 + 65.481, 16.0 + (65.481 + 2 * 128.553 + 3 * 24.966) / 255]
    np.testing.assert_allclose(rgb_to_y(pixels)[0], expected, rtol=0, atol=1e-12)


def test_to_uint8_image_clips_scales_and_rounds_half_to_even():
    values = np.array([-0.1, 0.5 / 255, 1.5 / 255, 0.5, 1.2])
    np.testing.assert_array_equal(to_uint8_image(values), np.array([0, 0, 2, 128, 255], dtype=np.uint8))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(8, 8, 3\).*\(8, 9, 3\)"):
        psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match=r"\(1, 8, 8, 3\).*\(1, 8, 9, 3\)"):
        ssim_jax(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 9, 3)))


def test_crop_border_too_large_is_rejected():
    image = np.zeros((20, 30, 3))
    with pytest.raises(ValueError, match="crop_border 10 leaves 0x10"):
        psnr(image, image, crop_border=10)
    with pytest.raises(ValueError, match="need at least 11x11"):
        ssim(image, image, crop_border=5)
    with pytest.raises(ValueError, match="need at least 11x11"):
        ssim_jax(jnp.zeros((1, 20, 30, 3)), jnp.zeros((1, 20, 30, 3)), crop_border=5)


def test_y_channel_requires_rgb():
    with pytest.raises(ValueError, match="3 channels"):
        psnr(np.zeros((16, 16)), np.zeros((16, 16)), test_y_channel=True)

"""imresize must reproduce MATLAB exactly, because benchmark LR images and bicubic baselines come from MATLAB."""
import numpy as np
import pytest
from PIL import Image

from iln_jax.data.imresize import _round_and_saturate_to_uint8, imresize, modcrop

SET5_NAMES = ("baby", "bird", "butterfly", "head", "woman")


def _load_set5(data_dir, name, scale):
    hr = np.asarray(Image.open(data_dir / "Set5" / "HR" / f"{name}.png"))
    lr = np.asarray(Image.open(data_dir / "Set5" / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"))
    return hr, lr


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_uint8_downscale_is_bit_exact_to_matlab_set5(data_dir, scale):
    """Set5 X2/X3/X4 LR were made by MATLAB on uint8, which quantises after each 1-D pass."""
    for name in SET5_NAMES:
        hr, lr_matlab = _load_set5(data_dir, name, scale)
        np.testing.assert_array_equal(imresize(modcrop(hr, scale), 1 / scale), lr_matlab, err_msg=name)


def test_float_downscale_rounded_once_is_bit_exact_to_matlab_set5_x8(data_dir):
    """Set5 X8 LR was made by MATLAB in double and rounded once, which checks the float path exactly."""
    for name in SET5_NAMES:
        hr, lr_matlab = _load_set5(data_dir, name, 8)
        lr = imresize(modcrop(hr, 8).astype(np.float64), 1 / 8)
        np.testing.assert_array_equal(_round_and_saturate_to_uint8(lr), lr_matlab, err_msg=name)


@pytest.mark.parametrize(
    ("shape", "scale", "expected"),
    [((7, 5), 0.5, (4, 3)), ((7, 5, 3), 3, (21, 15, 3)), ((480, 480, 3), 0.25, (120, 120, 3))],
)
def test_output_size_is_ceil_of_input_times_scale(shape, scale, expected):
    assert imresize(np.zeros(shape, np.float32), scale).shape == expected


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_output_dtype_matches_input(dtype):
    """uint8 stays uint8 (MATLAB semantics); floats stay unrounded in their own precision."""
    img = np.random.default_rng(0).uniform(0, 255, (12, 10, 3)).astype(dtype)
    for scale in (0.5, 2):
        out = imresize(img, scale)
        assert out.dtype == dtype and out.flags.c_contiguous


def test_float32_input_is_computed_in_float64_between_passes():
    img = np.random.default_rng(4).uniform(0, 1, (40, 36, 3)).astype(np.float32)
    expected = imresize(img.astype(np.float64), 0.25).astype(np.float32)
    np.testing.assert_array_equal(imresize(img, 0.25), expected)


def test_float_output_is_not_rounded():
    img = np.random.default_rng(1).uniform(0, 1, (16, 16))
    out = imresize(img, 0.5)
    assert not np.allclose(out * 255, np.round(out * 255))


def test_hw_image_equals_each_channel_of_hwc():
    img = np.random.default_rng(2).integers(0, 256, (20, 18, 3), dtype=np.uint8)
    out = imresize(img, 1 / 3)
    for channel in range(3):
        np.testing.assert_array_equal(imresize(img[..., channel], 1 / 3), out[..., channel])


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 2, 4])
def test_constant_image_stays_constant(scale):
    """Weights sum to 1 and the mirrored border adds no foreign values."""
    out = imresize(np.full((24, 20, 3), 0.37), scale)
    np.testing.assert_allclose(out, 0.37, rtol=0, atol=1e-12)


def test_downscale_without_antialiasing_samples_the_plain_keys_kernel():
    """At 1/2 each output sits between two inputs, so the unstretched kernel gives (-1, 9, 9, -1) / 16."""
    signal = np.random.default_rng(3).uniform(0, 1, (1, 16))
    out = imresize(signal, 0.5, antialiasing=False)[0]
    taps = np.array([-1, 9, 9, -1]) / 16
    interior = [signal[0, 2 * j - 1 : 2 * j + 3] @ taps for j in range(1, 7)]
    np.testing.assert_allclose(out[1:7], interior, rtol=0, atol=1e-12)


def test_matlab_uint8_cast_rounds_half_away_from_zero_and_saturates():
    values = np.array([-3.2, -0.5, 0.5, 1.5, 2.5, 254.5, 255.4, 300.0])
    np.testing.assert_array_equal(_round_and_saturate_to_uint8(values), [0, 0, 1, 2, 3, 255, 255, 255])


def test_rejects_unsupported_inputs():
    with pytest.raises(TypeError, match="int32"):
        imresize(np.zeros((4, 4), np.int32), 0.5)
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 3\)"):
        imresize(np.zeros((2, 4, 4, 3), np.uint8), 0.5)
    with pytest.raises(ValueError, match="positive"):
        imresize(np.zeros((4, 4), np.uint8), 0)


def test_modcrop_keeps_top_left_multiple_of_scale():
    img = np.arange(7 * 10).reshape(7, 10)
    np.testing.assert_array_equal(modcrop(img, 3), img[:6, :9])
    assert modcrop(np.zeros((344, 228, 3)), 4).shape == (344, 228, 3)

"""PSNR and SSIM with the conventions of published image-restoration results (BasicSR / SwinIR).

Published numbers depend on every detail below, so these functions reproduce BasicSR's
``metrics/psnr_ssim.py`` (which matches the MATLAB evaluation scripts up to Y rounding):

* Inputs are HWC (or HW) images in 0..255, **RGB** channel order (BasicSR's are BGR because cv2
  reads them so; its weights are reversed accordingly). Model outputs are first quantised with
  :func:`to_uint8_image`.
* ``crop_border`` pixels are removed on every side before anything else (SR uses ``crop_border = scale``).
* ``test_y_channel`` evaluates on the ITU-R BT.601 luma ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``,
  kept as unrounded float.
* PSNR uses one joint MSE over all pixels and channels.
* SSIM uses an 11x11 Gaussian window (sigma 1.5) over the valid region only, population moments,
  ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, and averages the per-channel means.

The numpy functions compute in float64 and are the reference. :func:`psnr_jax` and :func:`ssim_jax`
are jittable batched versions for validation inside training.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

_MAX_VALUE = 255.0
_SSIM_C1 = (0.01 * _MAX_VALUE) ** 2
_SSIM_C2 = (0.03 * _MAX_VALUE) ** 2
SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def to_uint8_image(x) -> np.ndarray:
    """Quantise a float image in [0, 1] to uint8 the way evaluation scripts do before measuring.

    Clip to [0, 1], scale by 255 and round half to even (numpy's and torch's ``round``, used by
    BasicSR's ``tensor2img``).
    """
    return np.round(np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def rgb_to_y(img) -> np.ndarray:
    """BT.601 luma of an RGB image in 0..255, as float64 in [16, 235], not rounded; drops the channel axis.

    Computed in pure float64. BasicSR round-trips through float32 instead, which moves Y by at most
    2e-5; on Set5 x4 bicubic that changes PSNR_Y by < 3e-7 dB and SSIM_Y by < 1e-8.
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim < 3 or img.shape[-1] != 3:
        raise ValueError(f"rgb_to_y needs an RGB image with 3 channels last, got shape {img.shape}")
    return _bt601_luma(img)


def psnr(img, ref, *, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """PSNR in dB between two HWC/HW images in 0..255, float64, joint MSE; ``inf`` if they are equal."""
    img, ref = _prepare_pair_np(img, ref, crop_border, test_y_channel, min_size=1)
    mse = np.mean((img - ref) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(_MAX_VALUE**2 / mse))


def ssim(img, ref, *, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """SSIM between two HWC/HW images in 0..255 (Gaussian 11x11, valid region), mean over channels.

    Equals ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)`` up to floating-point noise.
    """
    img, ref = _prepare_pair_np(img, ref, crop_border, test_y_channel, min_size=SSIM_WINDOW)
    per_channel = [_ssim_map_np(img[..., c], ref[..., c]).mean() for c in range(img.shape[-1])]
    return float(np.mean(per_channel))


@functools.partial(jax.jit, static_argnames=("crop_border", "test_y_channel"))
def psnr_jax(img: jax.Array, ref: jax.Array, *, crop_border: int = 0, test_y_channel: bool = False) -> jax.Array:
    """Per-image PSNR (B,) of batched (B, H, W, C) images in 0..255; same conventions as :func:`psnr`.

    Computed in float32 (float64 if given). In float32 it agrees with the float64 :func:`psnr` to
    within 3.1e-6 dB on Set5 x4 bicubic outputs, RGB and Y (tests/metrics_test.py asserts 2e-5 dB).
    """
    img, ref = _prepare_batch_jax(img, ref, crop_border, test_y_channel, min_size=1)
    mse = jnp.mean((img - ref) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(_MAX_VALUE**2 / mse)  # mse == 0 gives inf, as in psnr()


@functools.partial(jax.jit, static_argnames=("crop_border", "test_y_channel"))
def ssim_jax(img: jax.Array, ref: jax.Array, *, crop_border: int = 0, test_y_channel: bool = False) -> jax.Array:
    """Per-image SSIM (B,) of batched (B, H, W, C) images in 0..255; same conventions as :func:`ssim`.

    Computed in float32 (float64 if given). The Gaussian window is applied as two VALID 1-D
    convolutions at HIGHEST precision (no TF32 on GPU). In float32 it agrees with the float64
    :func:`ssim` to within 2.8e-6 on Set5 x4 bicubic outputs, RGB and Y (tests/metrics_test.py
    asserts 1e-5).
    """
    img, ref = _prepare_batch_jax(img, ref, crop_border, test_y_channel, min_size=SSIM_WINDOW)
    batch, height, width, channels = img.shape
    # One single-channel image per (image, channel): per-channel SSIM means, then their mean.
    as_planes = lambda x: x.transpose(0, 3, 1, 2).reshape(batch * channels, height, width, 1)
    x, y = as_planes(img), as_planes(ref)
    moments = _gaussian_filter_valid_jax(jnp.concatenate([x, y, x * x, y * y, x * y]))
    mu_x, mu_y, e_xx, e_yy, e_xy = jnp.split(moments, 5)
    ssim_map = _ssim_from_moments(mu_x, mu_y, e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y)
    return ssim_map.reshape(batch, -1).mean(axis=1)


def _bt601_luma(rgb):
    """Y of YCbCr (BT.601, studio range) for numpy or jax arrays with RGB last, in 0..255 units."""
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def _check_same_shape(img_shape, ref_shape):
    """Name both shapes: a silent broadcast would give a meaningless number."""
    if img_shape != ref_shape:
        raise ValueError(f"image shapes differ: img {img_shape} vs ref {ref_shape}")


def _check_measurable(hwc_shape, crop_border, test_y_channel, min_size):
    """Raise ValueError when an (H, W, C) image cannot be measured with these settings."""
    height, width, channels = hwc_shape
    if test_y_channel and channels != 3:
        raise ValueError(f"test_y_channel needs RGB images (3 channels), got {channels} channel(s)")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    left_h, left_w = height - 2 * crop_border, width - 2 * crop_border
    if min(left_h, left_w) < min_size:
        raise ValueError(
            f"crop_border {crop_border} leaves {left_h}x{left_w} of a {height}x{width} image; "
            f"need at least {min_size}x{min_size}"
        )


def _prepare_pair_np(img, ref, crop_border, test_y_channel, min_size):
    """Validate, crop, optionally convert to Y; return float64 HWC arrays."""
    img, ref = np.asarray(img, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    _check_same_shape(img.shape, ref.shape)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an HW or HWC image, got shape {img.shape}")
    img, ref = (x if x.ndim == 3 else x[..., None] for x in (img, ref))
    _check_measurable(img.shape, crop_border, test_y_channel, min_size)
    return _crop_and_select_channel(img, ref, crop_border, test_y_channel)


def _prepare_batch_jax(img, ref, crop_border, test_y_channel, min_size):
    """Validate (at trace time), crop, optionally convert to Y; return BHWC arrays."""
    _check_same_shape(img.shape, ref.shape)
    if img.ndim != 4:
        raise ValueError(f"expected a (B, H, W, C) batch, got shape {img.shape}")
    _check_measurable(img.shape[1:], crop_border, test_y_channel, min_size)
    # At least float32: squared differences of uint8 would wrap, and bfloat16 is too coarse for metrics.
    img, ref = (jnp.asarray(x, jnp.promote_types(x.dtype, jnp.float32)) for x in (img, ref))
    return _crop_and_select_channel(img, ref, crop_border, test_y_channel)


def _crop_and_select_channel(img, ref, crop_border, test_y_channel):
    """Remove ``crop_border`` pixels per side and optionally keep only Y; (..., H, W, C) numpy or jax."""
    if crop_border:
        img, ref = (x[..., crop_border:-crop_border, crop_border:-crop_border, :] for x in (img, ref))
    if test_y_channel:
        img, ref = (_bt601_luma(x)[..., None] for x in (img, ref))
    return img, ref


def _gaussian_taps() -> np.ndarray:
    """The normalised 11-tap Gaussian of sigma 1.5 (cv2.getGaussianKernel(11, 1.5)), float64."""
    offsets = np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2
    taps = np.exp(-(offsets**2) / (2 * _SSIM_SIGMA**2))
    return taps / taps.sum()


def _ssim_from_moments(mu_x, mu_y, var_x, var_y, cov_xy):
    """The SSIM map from local means, population variances and covariance (numpy or jax)."""
    numerator = (2 * mu_x * mu_y + _SSIM_C1) * (2 * cov_xy + _SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return numerator / denominator


def _gaussian_filter_valid_np(x: np.ndarray) -> np.ndarray:
    """Separable Gaussian correlation of an HW array over the valid region (no padding)."""
    taps = _gaussian_taps()
    rows_out = x.shape[0] - SSIM_WINDOW + 1
    cols_out = x.shape[1] - SSIM_WINDOW + 1
    x = sum(w * x[k : k + rows_out] for k, w in enumerate(taps))
    return sum(w * x[:, k : k + cols_out] for k, w in enumerate(taps))


def _ssim_map_np(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM map of two single-channel float64 images."""
    mu_x, mu_y = _gaussian_filter_valid_np(x), _gaussian_filter_valid_np(y)
    var_x = _gaussian_filter_valid_np(x * x) - mu_x**2
    var_y = _gaussian_filter_valid_np(y * y) - mu_y**2
    cov_xy = _gaussian_filter_valid_np(x * y) - mu_x * mu_y
    return _ssim_from_moments(mu_x, mu_y, var_x, var_y, cov_xy)


def _gaussian_filter_valid_jax(planes: jax.Array) -> jax.Array:
    """Separable Gaussian correlation of (N, H, W, 1) planes, VALID, via two 1-D convolutions."""
    taps = jnp.asarray(_gaussian_taps(), dtype=planes.dtype)
    dims = ("NHWC", "HWIO", "NHWC")
    for kernel in (taps.reshape(-1, 1, 1, 1), taps.reshape(1, -1, 1, 1)):
        planes = jax.lax.conv_general_dilated(
            planes, kernel, window_strides=(1, 1), padding="VALID",
            dimension_numbers=dims, precision=jax.lax.Precision.HIGHEST,
        )
    return planes

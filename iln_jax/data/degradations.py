"""The field's degradations, made on the fly from a clean uint8 image and a per-sample generator.

* SR: MATLAB bicubic ``imresize`` by 1/s on uint8 with rounding after each pass, the way DF2K's
  ``LR_bicubic/X{s}`` folders and the benchmark LR sets were made. :func:`bicubic_lr_patch` computes an
  LR patch from a small HR window and equals the same crop of the whole-image LR exactly, so making
  LR on the fly costs a patch, not an image, and agrees bit for bit with a pre-made LR folder.
* Denoising: ``lq = gt + N(0, (sigma/255)^2)`` in float32, **not clipped**, as KAIR/SwinIR (training
  and test) and Restormer do; models therefore see values slightly outside [0, 1].
* JPEG: Pillow's encoder at quality q with its defaults (4:2:0 chroma subsampling for colour, the
  same libjpeg tables as ``cv2.imencode``); gray tasks compress the 1-channel (Y) image.
* Deraining without paired data (embedded photos only): additive synthetic streaks, clipped, since
  no rain data set is available offline. Real training uses Rain13K pairs.

Levels given as ``(lo, hi)`` ranges are drawn per sample in training (blind models) and fixed to the
midpoint for evaluation.
"""
from __future__ import annotations

import dataclasses
import io
import math

import ml_collections
import numpy as np
from PIL import Image

from iln_jax.data import config as config_lib
from iln_jax.data.imresize import imresize

# Context (in LR pixels) around an LR patch that bicubic_lr_patch resizes: the antialiased kernel
# reaches 2 LR pixels (2*scale HR pixels) from an output pixel's centre; one more for safety.
_LR_MARGIN = 3


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (exactly k/255, so x*255 rounds back to the original)."""
    return img.astype(np.float32) / np.float32(255.0)


def bicubic_lr_patch(hr: np.ndarray, scale: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    """``imresize(modcrop(hr, scale), 1/scale)[top:top+height, left:left+width]`` from an HR window.

    MATLAB's resampling is local (each LR pixel reads at most 2 LR pixels of context) and its border
    mirroring only matters at the image border, so resizing the HR window of the patch plus a margin
    (clipped to the image, where the mirroring then coincides) gives the identical uint8 values.
    """
    lr_h, lr_w = hr.shape[0] // scale, hr.shape[1] // scale
    if not (0 <= top and top + height <= lr_h and 0 <= left and left + width <= lr_w):
        raise ValueError(f"LR patch ({top}, {left}, {height}, {width}) outside the {lr_h}x{lr_w} LR image")
    y0, y1 = max(top - _LR_MARGIN, 0), min(top + height + _LR_MARGIN, lr_h)
    x0, x1 = max(left - _LR_MARGIN, 0), min(left + width + _LR_MARGIN, lr_w)
    lr = imresize(hr[y0 * scale:y1 * scale, x0 * scale:x1 * scale], 1 / scale)
    return lr[top - y0:top - y0 + height, left - x0:left - x0 + width]


def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Float image plus N(0, (sigma/255)^2) noise, unclipped (the field's training and test convention)."""
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return img + noise


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode a uint8 (H, W, 1|3) image with Pillow's JPEG encoder at ``quality``."""
    gray = img.shape[-1] == 1
    buffer = io.BytesIO()
    Image.fromarray(img[..., 0] if gray else img).save(buffer, format="JPEG", quality=int(quality))
    with Image.open(buffer) as decoded:
        out = np.asarray(decoded.convert("L" if gray else "RGB"))
    return out[..., None] if gray else out


def synthetic_rain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add straight, slightly blurred, achromatic rain streaks to a uint8 image; float32 result in [0, 1].

    One direction per image (within 30 degrees of vertical), streak length 8-24 px, density and
    strength drawn per image, like the Rain100L/H synthesis (O = B + R, clipped).
    """
    h, w = img.shape[:2]
    angle = rng.uniform(-math.pi / 6, math.pi / 6)
    length = rng.uniform(8.0, 24.0)
    strength = rng.uniform(0.4, 0.8)
    count = rng.poisson(rng.uniform(0.002, 0.006) * (h + length) * (w + length))
    dy, dx = math.cos(angle), math.sin(angle)
    # Seeds start above/beside the image too, so streaks also enter through the borders.
    starts_y = rng.uniform(-length, h, count)
    starts_x = rng.uniform(-length, w + length, count)
    brightness = rng.uniform(0.6, 1.0, count)
    steps = np.arange(int(math.ceil(length)))
    ys = np.round(starts_y[:, None] + steps * dy).astype(np.int64)
    xs = np.round(starts_x[:, None] + steps * dx).astype(np.int64)
    values = np.broadcast_to(brightness[:, None], ys.shape)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    layer = np.zeros((h, w), np.float32)
    np.add.at(layer, (ys[inside], xs[inside]), values[inside])
    layer = np.clip(_blur3(layer), 0.0, 1.0)
    return np.clip(to_float(img) + np.float32(strength) * layer[..., None], 0.0, 1.0)


def _blur3(x: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge replication (anti-aliases the 1-px streaks)."""
    for axis in (0, 1):
        padded = np.pad(x, [(1, 1) if a == axis else (0, 0) for a in range(2)], mode="edge")
        lo, mid, hi = (np.take(padded, range(k, k + x.shape[axis]), axis=axis) for k in range(3))
        x = 0.25 * lo + 0.5 * mid + 0.25 * hi
    return x


@dataclasses.dataclass(frozen=True)
class Degradation:
    """The task part of the data config, resolved: what input to make from a clean image."""

    task: str
    scale: int
    noise_sigma: tuple[float, float]
    jpeg_quality: tuple[int, int]

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Degradation":
        return cls(
            task=config.task,
            scale=config_lib.effective_scale(config),
            noise_sigma=config_lib.level_range(config.noise_sigma, "noise_sigma", low=0),
            jpeg_quality=config_lib.level_range(config.jpeg_quality, "jpeg_quality", low=1, high=100,
                                                integer=True),
        )

    @property
    def gray(self) -> str:
        """Colour-to-gray conversion for 1-channel tasks (see config.py: luma for dn, else Y)."""
        return "luma" if self.task == "dn" else "y"

    def make_input(self, gt: np.ndarray, rng: np.random.Generator, *, evaluation: bool = False) -> np.ndarray:
        """The degraded float32 input for a clean uint8 image (SR: the whole image, modcropped first).

        ``evaluation`` fixes ranged levels to their midpoint instead of drawing them from ``rng``.
        """
        if self.task == "sr":
            h, w = gt.shape[0] // self.scale, gt.shape[1] // self.scale
            return to_float(bicubic_lr_patch(gt, self.scale, 0, 0, h, w))
        if self.task == "dn":
            return gaussian_noise(to_float(gt), self._level(self.noise_sigma, rng, evaluation), rng)
        if self.task == "car":
            lo, hi = self.jpeg_quality
            quality = round((lo + hi) / 2) if evaluation else int(rng.integers(lo, hi + 1))
            return to_float(jpeg(gt, quality))
        return synthetic_rain(gt, rng)

    @staticmethod
    def _level(bounds: tuple[float, float], rng: np.random.Generator, evaluation: bool) -> float:
        lo, hi = bounds
        if evaluation or lo == hi:
            return (lo + hi) / 2
        return float(rng.uniform(lo, hi))

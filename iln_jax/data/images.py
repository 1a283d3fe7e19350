"""Reading image files into uint8 HWC arrays with the task's channel count.

Everything downstream (crops, degradations, batches) assumes ``uint8`` arrays of shape (H, W, C)
with C = 1 or 3, so every decoding quirk is settled here: palette, CMYK and RGBA files become RGB
(alpha dropped, as ``cv2.imread(IMREAD_COLOR)`` does in BasicSR), 16-bit grayscale is scaled to 8
bits, gray files feeding a colour task are replicated, and colour files feeding a gray task are
reduced with the task's gray conversion. Failures raise :class:`BadImageError` naming the file so a
bad file among 140k sub-images can be found.
"""
from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
from etils import epath
from PIL import Image

from iln_jax.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# BT.601 Y on 0..255 inputs (MATLAB rgb2ycbcr, BasicSR/KAIR bgr2ycbcr(y_only=True) with RGB order).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
# BT.601 full-range luma, what cv2.IMREAD_GRAYSCALE / cv2.COLOR_RGB2GRAY compute.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
GRAY_CONVERSIONS = ("y", "luma")

ImageData = Union[str, os.PathLike, bytes]


class BadImageError(DataError):
    """An image (or LR/HR pair) that cannot be used; the message names the file(s) and the reason."""


def list_images(folder: str) -> list[str]:
    """Sorted paths of the image files directly inside ``folder`` (other files are ignored)."""
    if "://" in os.fspath(folder):  # an object store: one listing, no per-entry type query
        return sorted(str(p) for p in epath.Path(folder).iterdir()
                      if not p.name.startswith(".") and p.name.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(
        os.path.join(folder, entry.name)
        for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith(".")
        and entry.name.lower().endswith(IMAGE_EXTENSIONS))


def read_image(data: ImageData, label: str, channels: int, gray: str) -> np.ndarray:
    """Decode a file path or encoded bytes into uint8 (H, W, channels).

    ``label`` names the image in errors (its path, or its record in a TFDS dataset); ``gray`` is the
    colour-to-gray conversion ("y" or "luma") used when ``channels == 1``.
    """
    try:
        if not isinstance(data, bytes) and "://" in os.fspath(data):  # gs://...: read through etils.epath
            data = epath.Path(data).read_bytes()
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            img.load()
            array = _to_uint8_array(img)
    except BadImageError as e:
        raise BadImageError(f"cannot use image {label}: {e}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImageError(f"cannot read image {label}: {type(e).__name__}: {e}") from None
    return to_channels(array, channels, gray)


def to_channels(img: np.ndarray, channels: int, gray: str) -> np.ndarray:
    """Convert a uint8 (H, W, 1|3) image to ``channels`` channels."""
    if img.shape[-1] == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=-1)
    return rgb_to_gray(img, gray)


def rgb_to_gray(img: np.ndarray, kind: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 (H, W, 1): BT.601 Y (16..235) or full-range luma, rounded."""
    if kind == "y":
        gray = 16.0 + img.astype(np.float64) @ _Y_WEIGHTS
    elif kind == "luma":
        gray = img.astype(np.float64) @ _LUMA_WEIGHTS
    else:
        raise ValueError(f"gray conversion must be one of {GRAY_CONVERSIONS}, got {kind!r}")
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]


def _to_uint8_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(img).astype(np.float64)
        if wide.max(initial=0) > 65535 or wide.min(initial=0) < 0:
            raise BadImageError(f"32-bit integer pixels outside 0..65535 (mode {img.mode})")
        return np.round(wide / 257.0).astype(np.uint8)[..., None]
    if img.mode == "RGB":
        return np.asarray(img)
    if img.mode in ("1", "L", "LA", "La"):
        return np.asarray(img if img.mode == "L" else img.convert("L"))[..., None]
    if img.mode in ("RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr"):
        return np.asarray(img.convert("RGB"))
    raise BadImageError(f"unsupported pixel mode {img.mode!r}")

"""The embedded default data set: scikit-image's bundled colour photos (no download, public domain/CC0).

``python train.py`` with no data path trains on these, so every task can be run end to end offline.
Split (a "Set5-like" held-out set, as METRICS.md suggests):

* train: rocket (427x640), hubble_deep_field (872x1000), immunohistochemistry (512x512),
  retina (cropped to the 960x960 square inside its fundus disc, dropping the black border) and the
  left view of stereo_motorcycle (500x741; the right view is nearly the same picture, so it is left out).
* eval: astronaut, coffee, chelsea, centre-cropped to 240x240 so that CPU validation is fast;
  240 is divisible by 2, 3, 4, 8 and 16, so every SR scale and window size 8/16 tiles it exactly.

Deraining has no paired photos here; its inputs are synthetic streaks (``degradations.synthetic_rain``).
"""
from __future__ import annotations

import functools

import numpy as np

from iln_jax.data import images, sources

TRAIN_PHOTOS = ("rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle")
EVAL_PHOTOS = ("astronaut", "coffee", "chelsea")
EVAL_CROP = 240
# The fundus disc of `retina` is centred at (702, 704) with radius ~696; this square lies inside it.
_RETINA_BOX = (slice(222, 1182), slice(224, 1184))


@functools.lru_cache(maxsize=None)
def photo(name: str, channels: int = 3, gray: str = "y") -> np.ndarray:
    """A photo as read-only uint8 (H, W, channels), cached per process (workers load their own copy)."""
    import skimage.data  # Imported on use: it is slow to import and only the embedded set needs it.

    img = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":
        img = img[0]
    elif name == "retina":
        img = img[_RETINA_BOX]
    elif name in EVAL_PHOTOS:
        top, left = (img.shape[0] - EVAL_CROP) // 2, (img.shape[1] - EVAL_CROP) // 2
        img = img[top:top + EVAL_CROP, left:left + EVAL_CROP]
    img = images.to_channels(np.ascontiguousarray(img), channels, gray)
    img.flags.writeable = False
    return img


class EmbeddedSource:
    """The train or eval photos as a source of unpaired clean images (inputs are made on the fly)."""

    paired = False

    def __init__(self, split: str, *, channels: int, gray: str):
        if split not in ("train", "eval"):
            raise ValueError(f"embedded split must be 'train' or 'eval', got {split!r}")
        self._names = TRAIN_PHOTOS if split == "train" else EVAL_PHOTOS
        self._channels, self._gray = channels, gray

    def __len__(self) -> int:
        return len(self._names)

    def label(self, index: int) -> str:
        return f"skimage.data.{self._names[index]}"

    def load(self, index: int) -> sources.Example:
        name = self._names[index]
        return sources.Example(name, photo(name, self._channels, self._gray), None, self.label(index), None)

"""Each task's benchmark sets and metric conventions (ARCHITECTURES.md §2, METRICS.md).

| task | benchmark folders | headline metric | crop border |
|---|---|---|---|
| sr  | Set5, Set14, BSD100, Urban100, Manga109 | PSNR/SSIM on Y | scale |
| dn  | CBSD68, Kodak24, McMaster, Urban100 (+ seeded Gaussian noise) | PSNR/SSIM on RGB | 0 |
| car | LIVE1, Classic5 (+ Pillow JPEG at quality q) | PSNR/SSIM on Y | 0 |
| dr  | Rain100L, Rain100H, Test100, ... (``input/`` + ``target/``) | PSNR/SSIM on Y | 0 |

Both the RGB and the Y numbers are always computed and stored; the convention only decides which
pair is the headline. Gray (1-channel) images are measured as they are.
"""
from __future__ import annotations

import dataclasses

from iln_jax.data.config import TASKS

BENCHMARKS = {
    "sr": ("Set5", "Set14", "BSD100", "Urban100", "Manga109"),
    "dn": ("CBSD68", "Kodak24", "McMaster", "Urban100"),
    "car": ("LIVE1", "Classic5"),
    "dr": ("Rain100L", "Rain100H", "Test100", "Test1200", "Test2800"),
}
_Y_TASKS = ("sr", "car", "dr")


@dataclasses.dataclass(frozen=True)
class Convention:
    task: str
    scale: int
    crop_border: int
    test_y_channel: bool

    @property
    def label(self) -> str:
        return f"{'Y' if self.test_y_channel else 'RGB'}, crop {self.crop_border}"

    def for_channels(self, channels: int) -> "Convention":
        """Y needs RGB: gray images are measured on their single channel."""
        return dataclasses.replace(self, test_y_channel=self.test_y_channel and channels == 3)


def convention(task: str, scale: int = 1, *, crop_border: int | None = None,
               test_y_channel: bool | None = None) -> Convention:
    """The task's convention, optionally overridden."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; valid: {', '.join(TASKS)}")
    scale = scale if task == "sr" else 1
    return Convention(task=task, scale=scale,
                      crop_border=scale if crop_border is None and task == "sr" else (crop_border or 0),
                      test_y_channel=task in _Y_TASKS if test_y_channel is None else test_y_channel)


def task_description(task: str, *, scale: int = 1, noise_sigma=None, jpeg_quality=None) -> str:
    return {"sr": f"SR x{scale}", "dn": f"denoising sigma {noise_sigma}", "car": f"JPEG CAR q{jpeg_quality}",
            "dr": "deraining"}[task]

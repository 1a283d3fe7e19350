"""Validation on full images through the one inference stack (``iln_jax.inference.Restorer``):
data parallel over every device of every process, PSNR/SSIM with the field's conventions, PNGs.

* Every process builds the same :class:`Validator` (the eval set is small and loaded everywhere) and
  calls it at the same steps: the restorer runs the images as global batches of one image per device
  over the training mesh (``Restorer.restore_many``), each device computing what one device would
  for that image, so the scores equal the one-device path. Executables are compiled once per padded
  shape and reused across validations. With ``eval.bucket > 0`` inputs are padded further, to a
  multiple of ``lcm(bucket, window)``, so that many image sizes share a few compiled shapes (the
  output is cropped back); the default 0 keeps the exact shapes, i.e. the model's own padding to a
  window multiple, as the official scripts.
* Outputs are clipped to [0, 1] and rounded to uint8 before measuring (``iln_jax.metrics``); PSNR
  and SSIM use ``crop_border`` (scale for SR) and the Y channel where the task's papers do.
* The baseline is computed once: MATLAB bicubic upscaling of the LR input for SR, the degraded
  input itself for denoising / CAR / deraining.
* Only the process with ``write=True`` (process 0) writes PNGs.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from jax.sharding import Mesh

from iln_jax import metrics, paths
from iln_jax.data import imresize
from iln_jax.inference.runner import Restorer


def baseline(lq: np.ndarray, scale: int) -> np.ndarray:
    """The reference method's output: MATLAB bicubic for SR, the input itself otherwise."""
    if scale > 1:
        return np.clip(imresize(np.asarray(lq, np.float64), scale), 0.0, 1.0)
    return np.asarray(lq)


class Validator:
    def __init__(self, model, eval_set: list[dict], *, scale: int, crop_border: int,
                 test_y_channel: bool, bucket: int = 0, save_images: int = 0,
                 image_dir: Optional[paths.PathLike] = None,
                 compiler_options: Optional[dict] = None, mesh: Optional[Mesh] = None, write: bool = True):
        if not eval_set:
            raise ValueError("The validation set is empty")
        self.model = model
        self.images = eval_set
        self.scale = scale
        self.measure = dict(crop_border=crop_border, test_y_channel=test_y_channel)
        self.bucket = bucket
        self.save_images = save_images
        self.image_dir = None if image_dir is None else paths.as_path(image_dir)
        self.mesh = mesh
        self.write = write
        self.compiler_options = compiler_options
        self.baseline = self._score([baseline(im["lq"], scale) for im in eval_set])

    def _score(self, outputs: list[np.ndarray]) -> dict:
        per_image = {}
        for im, out in zip(self.images, outputs):
            pred, ref = metrics.to_uint8_image(out), metrics.to_uint8_image(im["gt"])
            per_image[im["name"]] = (metrics.psnr(pred, ref, **self.measure),
                                     metrics.ssim(pred, ref, **self.measure))
        vals = np.array(list(per_image.values()))
        return {"psnr": float(vals[:, 0].mean()), "ssim": float(vals[:, 1].mean()), "per_image": per_image}

    def restorer(self, variables) -> Restorer:
        # Cheap to build per validation: executables are cached process-wide by shape.
        return Restorer(self.model, variables, bucket=self.bucket, mesh=self.mesh,
                        compiler_options=self.compiler_options)

    def restore(self, variables, lq: np.ndarray) -> np.ndarray:
        """One image (one device)."""
        return Restorer(self.model, variables, bucket=self.bucket,
                        compiler_options=self.compiler_options).restore(np.asarray(lq, np.float32))

    def __call__(self, variables, step: int, tag: str = "") -> dict:
        """Mean and per-image PSNR/SSIM of ``variables`` (a replicated tree); the first
        ``save_images`` outputs as uint8 (``"images"``) and as PNGs under ``image_dir``."""
        outputs = self.restorer(variables).restore_many([np.asarray(im["lq"], np.float32) for im in self.images])
        scores = self._score(outputs)
        shown = outputs[: self.save_images]
        scores["images"] = {im["name"]: metrics.to_uint8_image(out) for im, out in zip(self.images, shown)}
        if self.image_dir is not None and shown and self.write:
            self._save(shown, step, tag)
        return scores

    def _save(self, outputs, step: int, tag: str) -> None:
        folder = self.image_dir / f"step_{step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        for im, out in zip(self.images, outputs):
            suffix = f"_{tag}" if tag else ""
            paths.save_png(folder / f"{im['name']}{suffix}.png", metrics.to_uint8_image(out))
        if not (self.image_dir / "reference").exists():
            ref = self.image_dir / "reference"
            ref.mkdir(parents=True, exist_ok=True)
            for im in self.images[: len(outputs)]:
                paths.save_png(ref / f"{im['name']}_gt.png", metrics.to_uint8_image(im["gt"]))
                paths.save_png(ref / f"{im['name']}_baseline.png",
                               metrics.to_uint8_image(baseline(im["lq"], self.scale)))

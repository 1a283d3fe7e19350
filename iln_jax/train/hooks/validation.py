"""Validation during the run (``validate.py`` measures): every ``eval.every`` steps and at the last."""
from __future__ import annotations

from typing import Callable, Optional

from iln_jax import data as data_lib
from iln_jax import xla_options
from iln_jax.data.config import effective_scale
from iln_jax.train.hooks.base import Hook, Step
from iln_jax.train.logging import MetricWriter
from iln_jax.train.parallel import DataParallel
from iln_jax.train.state import TrainState
from iln_jax.train.validate import Validator


def make_validator(config, model, parallel: DataParallel, workdir, *, write: bool) -> Optional[Validator]:
    """The run's validator (None with ``eval.every < 0``): every process validates, data parallel
    over the mesh; the one with ``write`` writes PNGs. Computes the baseline's scores."""
    if config.eval.every < 0:
        return None
    c = config
    scale = effective_scale(c.data)
    return Validator(model, data_lib.make_eval_set(c.data), scale=scale, mesh=parallel.mesh, write=write,
                     crop_border=c.eval.crop_border if c.eval.crop_border >= 0 else (scale if scale > 1 else 0),
                     test_y_channel=c.eval.test_y_channel, bucket=c.eval.bucket,
                     save_images=c.eval.save_images, image_dir=workdir / "images",
                     compiler_options=xla_options.compiler_options(fast=c.train.fast_compile))


def weight_tags(weights: str, has_ema: bool) -> list[str]:
    """Which weights ``eval.weights`` validates: ``ema`` falls back to ``raw`` without EMA."""
    if weights == "both" and has_ema:
        return ["ema", "raw"]
    return ["ema" if weights in ("ema", "both") and has_ema else "raw"]


class Validation(Hook):
    """Validates at its steps (after fetching the pending metrics), writes the scores to the
    metric logs and a ``[val]`` line; at the end, validates once if it never did (a run resumed
    at its final step)."""

    aside = True

    def __init__(self, validator: Validator, writer: MetricWriter, parallel: DataParallel, *, every: int,
                 tags: list[str], before: Callable[[], None], say: Optional[Callable[[str], None]]):
        self.validator, self.writer, self.parallel = validator, writer, parallel
        self.every, self.tags = every, tags
        self.before = before  # the pending metrics' fetch and check
        self.say = say        # None: this process prints nothing
        self.scores: dict[str, dict] = {}  # of the last validation, per weights tag

    def __call__(self, step: Step) -> None:
        if step.due(self.every):
            self.before()
            self.validate(step.state, step.number)

    def finish(self, state: TrainState, step: int, status: Optional[str]) -> dict:
        if not self.scores and status is None:
            self.validate(state, step)
        return {"baseline": {k: v for k, v in self.validator.baseline.items() if k != "per_image"},
                "validation": {t: {k: v for k, v in s.items() if k != "images"} for t, s in self.scores.items()}}

    def validate(self, state: TrainState, step: int) -> None:
        self.scores = {tag: self._validate(state, step, tag) for tag in self.tags}

    def _validate(self, state: TrainState, step: int, tag: str) -> dict:
        scores = self.validator(self.parallel.to_canonical(state.variables(tag)), step, tag=tag)
        self.writer.write_scalars(step, {f"{tag}/psnr": scores["psnr"], f"{tag}/ssim": scores["ssim"]}, split="val")
        self.writer.write_images(step, {f"{tag}/{k}": v for k, v in scores["images"].items()})
        if self.say is not None:
            base = self.validator.baseline
            self.say(f"[val] step {step} {tag}: PSNR {scores['psnr']:.3f} dB  SSIM {scores['ssim']:.4f}  "
                     f"(baseline {base['psnr']:.3f} / {base['ssim']:.4f})")
        return scores

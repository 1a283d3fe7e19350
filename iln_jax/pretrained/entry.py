"""One official checkpoint: what a faithful evaluation of it needs.

An entry names the converter arch and the official constructor arguments (a named variant of
``iln_jax.models.variants`` plus overrides), the task, scale and noise/JPEG setting, the padding of
the official test script, the state_dict entry it loads, the file name and where the file is
published. The built-in entries are in ``zoo.py``; ``registry.py`` finds them by name.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping, Optional

from iln_jax import models
from iln_jax.data.config import TASKS
from iln_jax.layers.padding import OFFICIAL_PADDINGS
from iln_jax.pretrained.errors import PretrainedError

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class Pretrained:
    name: str
    arch: str                    # converter arch: swinir, hat, hat_iln, drct, restormer, hint
    file_name: str               # the official file name (also its name in the cache)
    page: str                    # the official page that lists the file
    task: str                    # sr | dn | car | dr (iln_jax.evaluation.tasks)
    scale: int = 1
    padding: str = "reflect"     # the official test script's: reflect (to the next multiple) | symmetric
    variant: Optional[str] = None                          # iln_jax.models.variants name
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # official arguments over the variant's
    param_key: Optional[str] = None   # the entry the official test loads (it falls back like the official loader)
    url: Optional[str] = None         # a direct download; None: the file must be fetched by hand from ``page``
    size: Optional[int] = None
    sha256: Optional[str] = None
    noise_sigma: Optional[float] = None   # dn: the noise level of the model (blind models: the usual 25)
    jpeg_quality: Optional[int] = None    # car
    note: str = ""

    def constructor_kwargs(self) -> dict:
        """The official constructor arguments (for ``convert.from_torch(self.arch, ...)``), padding included."""
        kwargs = models.variant_kwargs(self.variant, **self.kwargs) if self.variant else dict(self.kwargs)
        if self.task == "sr":
            kwargs["upscale"] = self.scale
        return {**kwargs, "padding": self.padding}

    def data_settings(self) -> dict:
        """The task settings ``eval.py`` reads from a run's config (``LoadedModel.data_defaults``)."""
        out = {"task": self.task, "scale": self.scale}
        if self.noise_sigma is not None:
            out["noise_sigma"] = self.noise_sigma
        if self.jpeg_quality is not None:
            out["jpeg_quality"] = self.jpeg_quality
        return out

    def validate(self, origin: str = "the registry") -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task {self.task!r} (valid: {', '.join(TASKS)})")
        if self.padding not in OFFICIAL_PADDINGS:
            problems.append(f"padding {self.padding!r} (valid: {', '.join(OFFICIAL_PADDINGS)})")
        if self.task != "sr" and self.scale != 1:
            problems.append(f"scale {self.scale} for task {self.task!r} (only sr has a scale)")
        if self.sha256 is not None and not _SHA256.fullmatch(str(self.sha256)):
            problems.append(f"sha256 {self.sha256!r} (expected 64 lowercase hex digits)")
        if self.size is not None and (not isinstance(self.size, int) or self.size <= 0):
            problems.append(f"size {self.size!r} (expected a positive number of bytes)")
        if self.url is not None and not str(self.url).startswith(("https://", "http://")):
            problems.append(f"url {self.url!r} (expected http(s)://...)")
        if os.path.basename(self.file_name) != self.file_name or not self.file_name:
            problems.append(f"file_name {self.file_name!r} (a bare file name)")
        if problems:
            raise PretrainedError(f"{origin}: entry {self.name!r} has a bad " + "; ".join(problems))

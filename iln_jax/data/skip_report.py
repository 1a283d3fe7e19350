"""Counting and naming the images skipped with ``on_bad_image="skip"``, across worker processes.

Samples are made in grain worker processes, which cannot update a counter in the training process,
so each sample carries the index of the bad image it skipped (``patches.BAD_IMAGE_KEY``). This last
pipeline stage removes that entry from every batch (batches keep exactly ``lq``/``gt``), counts the
skipped patches, logs each bad file with its reason the first time it is seen, summarises on
``close()``, and keeps the tally in the iterator state so it survives a checkpoint restore.
"""
from __future__ import annotations

import logging
from typing import Callable

import grain
import numpy as np

from iln_jax.data.patches import BAD_IMAGE_KEY

logger = logging.getLogger(__name__)


class ReportBadImages(grain.IterDataset):
    """``parent`` with the bad-image marker removed; ``describe(index)`` says why an image is bad."""

    def __init__(self, parent: grain.IterDataset, describe: Callable[[int], str]):
        super().__init__(parent)
        self._describe = describe

    def __iter__(self) -> "ReportBadImagesIterator":
        return ReportBadImagesIterator(self._parent.__iter__(), self._describe)

    def __str__(self) -> str:
        return "ReportBadImages"


class ReportBadImagesIterator(grain.DatasetIterator):
    """Batches without the marker; ``skipped_patches`` and ``bad_images`` hold the tally so far."""

    def __init__(self, parent: grain.DatasetIterator, describe: Callable[[int], str]):
        super().__init__(parent)
        self._describe = describe
        self._skipped = 0
        self._bad: dict[int, str] = {}

    @property
    def skipped_patches(self) -> int:
        """Patches drawn from a substitute image because their image was unusable."""
        return self._skipped

    @property
    def bad_images(self) -> list[str]:
        """One line per unusable image: the file(s) and the reason."""
        return [self._bad[i] for i in sorted(self._bad)]

    def __next__(self) -> dict:
        batch = dict(next(self._parent))
        markers = np.asarray(batch.pop(BAD_IMAGE_KEY))
        for index in markers[markers >= 0].tolist():
            self._skipped += 1
            if index not in self._bad:
                self._bad[index] = self._describe(index)
                logger.warning("skipping unusable training image (%d patch(es) skipped so far): %s",
                               self._skipped, self._bad[index])
        return batch

    def get_state(self) -> dict:
        return {"parent": self._parent.get_state(), "skipped_patches": self._skipped,
                "bad_image_indices": sorted(self._bad)}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["parent"])
        self._skipped = state["skipped_patches"]
        self._bad = {i: self._describe(i) for i in state["bad_image_indices"]}

    def close(self) -> None:
        if not self._closed and self._skipped:
            logger.warning("skipped %d patch(es) because of %d unusable image(s):\n  %s",
                           self._skipped, len(self._bad), "\n  ".join(self.bad_images))
        super().close()

    def __str__(self) -> str:
        return "ReportBadImagesIterator"

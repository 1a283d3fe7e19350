"""Errors of ``iln_jax.pretrained``; each message is one line naming the model, file or key at fault."""
from __future__ import annotations

from iln_jax.errors import IlnJaxError


class PretrainedError(IlnJaxError, RuntimeError):
    """A pretrained model could not be provided (unknown name, bad registry record, missing file)."""


class NotDownloadableError(PretrainedError, FileNotFoundError):
    """The official file has no direct URL: the message says where to get it and where to put it."""


class DownloadError(PretrainedError):
    """The transfer failed (network, HTTP status); a partial file is kept so that a rerun resumes."""


class VerificationError(PretrainedError):
    """A file's size or sha256 differs from the registry's record."""

"""Writes the storage refused: which OS errors mean it, and how they are reported.

A full disk, an exceeded quota, a read-only or lost mount, an I/O error, a file grown past its
limit or a permission taken away stop the run with :class:`~iln_jax.errors.StorageError` naming
the file and the reason as the system words it ("No space left on device"); every other
``OSError`` is a bug or an unexpected condition and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
from typing import Iterator, Optional

from iln_jax.errors import IlnJaxError, StorageError
from iln_jax.train.checkpoint_integrity import short_reason

# OS errors that mean "the storage refused the write"; their text is what a user needs to see.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.EFBIG)


def storage_reason(error: BaseException) -> str:
    """The reason a write failed, as short as possible ("No space left on device"), found in
    ``error`` or the errors it was raised from (Orbax and TensorStore wrap the OS error)."""
    e: Optional[BaseException] = error
    while e is not None:
        text = str(e)
        for code in STORAGE_ERRNOS:
            if os.strerror(code) in text:
                return os.strerror(code)
        e = e.__cause__ or e.__context__
    return short_reason(error)


@contextlib.contextmanager
def stop_on_refused_writes(workdir) -> Iterator[None]:
    """An ``OSError`` of :data:`STORAGE_ERRNOS` raised in the block becomes a
    :class:`StorageError` naming the file (else ``workdir``); the project's own errors and other
    ``OSError`` pass unchanged."""
    try:
        yield
    except OSError as e:
        if isinstance(e, IlnJaxError) or e.errno not in STORAGE_ERRNOS:
            raise
        raise StorageError(f"cannot write {e.filename or workdir}: {storage_reason(e)}; stopping") from None

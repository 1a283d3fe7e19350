"""Every file the project reads or writes goes through ``etils.epath``: a local path and a URL
(``gs://bucket/run``, ``s3://...``) take the same code path.

``epath.Path`` serves local paths with ``pathlib``/``os`` and URLs with ``tf.io.gfile`` (when
TensorFlow is installed) or ``fsspec`` (``gcsfs`` for ``gs://``: ``pip install -r
requirements-cloud.txt``). Object stores lack three things a local file system has, and the
helpers here say what the project does instead:

* **append**: objects are immutable, so :func:`append_text` rewrites the whole object (logs are
  small; a local file is appended to as before);
* **atomic create-if-absent** (``link``): see ``train/workdir_lock.py``;
* **atomic rename** of a directory: a rename is a copy + delete, so checkpoints are never
  renamed by this project except to set a damaged one aside (Orbax commits ``gs://`` steps with
  its own marker file, not a rename).
"""
from __future__ import annotations

import importlib.util
import io
import json
import math
import os
from typing import Union

import numpy as np
from etils import epath
from PIL import Image

from iln_jax.errors import ConfigError, MissingDependencyError, one_line

PathLike = Union[str, os.PathLike, epath.Path]


def is_url(path: PathLike) -> bool:
    """``gs://b/x`` and friends (anything with a scheme), not a local path."""
    return "://" in os.fspath(path)


# The fsspec protocol etils.epath opens each URL scheme with (when TensorFlow is not installed).
_FSSPEC_PROTOCOL = {"gs": "gcs", "s3": "s3", "az": "az", "hf": "hf"}


def require_url_support(path: PathLike, what: str, *, checkpoints: bool = False) -> None:
    """Stop early, in one line naming the requirements file, when a package that ``path`` needs is
    missing: a URL's file system (``gs://``: gcsfs), and for Orbax checkpoints on ``gs://`` also
    google-cloud-storage. ``what`` names the path in the message (e.g. ``--workdir gs://b/run``).
    Local paths need nothing."""
    if not is_url(path):
        return
    from iln_jax import dependencies
    scheme = os.fspath(path).split("://", 1)[0]
    if importlib.util.find_spec("tensorflow") is None:  # else epath reads URLs with tf.io.gfile
        import fsspec
        try:
            fsspec.get_filesystem_class(_FSSPEC_PROTOCOL.get(scheme, scheme))
        except ImportError as e:
            raise (dependencies.missing_package(e, what)
                   or MissingDependencyError(f"{what}: {one_line(e)}")) from None
        except ValueError:
            raise ConfigError(f"{what}: unknown URL scheme {scheme}:// (a local path, or gs://, s3://, ...)") from None
    if checkpoints and scheme == "gs":
        dependencies.require("google.cloud.storage", f"{what} (Orbax checkpoints on gs://)")


def as_path(path: PathLike) -> epath.Path:
    """``path`` as an ``epath.Path``: URLs unchanged, local paths made absolute (Orbax and
    TensorStore need absolute local paths; a relative one would follow a later ``chdir``)."""
    p = epath.Path(path)
    return p if is_url(path) else epath.Path(os.path.abspath(os.fspath(p)))


def append_text(path: epath.Path, text: str) -> None:
    """Append ``text`` to ``path`` (created if absent); rewrites the object on object stores."""
    if is_url(path):
        old = path.read_text() if path.exists() else ""
        path.write_text(old + text)
    else:
        with path.open("a") as f:
            f.write(text)


def save_png(path: epath.Path, image) -> None:
    """A uint8 HWC array as a PNG at ``path`` (local or URL)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def dump_json(obj, path: epath.Path) -> None:
    """``obj`` as indented JSON at ``path``; NumPy scalars become numbers, and NaN/Infinity (not
    standard JSON) become strings."""
    path.write_text(json.dumps(_finite_json(obj), indent=2, default=_json_default) + "\n")


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)


def _finite_json(obj):
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj

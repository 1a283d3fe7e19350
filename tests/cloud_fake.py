"""An offline stand-in for Google Cloud Storage: ``gs://bucket/x`` served by fsspec from a local
folder, registered under the scheme etils.epath resolves ``gs://`` to (``fsspec.filesystem('gcs')``
when TensorFlow is absent).

Orbax cannot write to any stand-in (it checks the bucket with google-cloud-storage, then TensorStore
opens its own GCS connection and retries credentials for minutes: ../shared/reference/SCALE.md §4),
so :func:`install` also maps URLs to the same local folder at the two points where the project hands
a path to Orbax or TensorStore (``checkpoint.orbax_path``, ``checkpoint_integrity.kvstore_url``) and
records what reached them. Everything else (the lock, logs, config.json, images, the checks of
``checkpoint_integrity``, eval outputs) goes through epath to the stand-in.
"""
from __future__ import annotations

import os

import fsspec
from etils import epath
from fsspec.implementations.local import LocalFileSystem

PREFIX = "gs://"


class LocalBackedGCS(LocalFileSystem):
    """``gs://b/p`` <-> ``<root>/b/p``; lists and globs answer in ``gs://`` form."""

    protocol = ("gs", "gcs")
    root: str = ""

    def __init__(self, *args, finalize_on_close=None, **kwargs):  # noqa: ARG002 - gcsfs's option
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        if path.startswith(PREFIX):
            return os.path.join(cls.root, path[len(PREFIX):]).rstrip("/") or "/"
        if path.startswith("gcs://"):
            return os.path.join(cls.root, path[len("gcs://"):]).rstrip("/")
        return super()._strip_protocol(path)


def local_mirror(url) -> str:
    text = os.fspath(url)
    assert text.startswith(PREFIX), text
    return os.path.join(LocalBackedGCS.root, text[len(PREFIX):])


def install(monkeypatch, root) -> list[str]:
    """Serve ``gs://`` from ``root``; returns the list of paths that reach Orbax/TensorStore."""
    from etils.epath import backend
    from iln_jax.train import checkpoint, checkpoint_integrity

    monkeypatch.setattr(LocalBackedGCS, "root", str(root))
    fsspec.register_implementation("gcs", LocalBackedGCS, clobber=True)
    fsspec.register_implementation("gs", LocalBackedGCS, clobber=True)
    backend._FileSystemSpecBackend._get_filesystem.cache_clear()
    reached: list[str] = []
    original_kvstore_url = checkpoint_integrity.kvstore_url

    def orbax_path(path):
        reached.append(os.fspath(path))
        return epath.Path(local_mirror(path)) if os.fspath(path).startswith(PREFIX) else path

    def kvstore_url(directory):
        reached.append(os.fspath(directory))
        text = os.fspath(directory)
        return original_kvstore_url(epath.Path(local_mirror(text)) if text.startswith(PREFIX) else directory)

    monkeypatch.setattr(checkpoint, "orbax_path", orbax_path)
    monkeypatch.setattr(checkpoint_integrity, "kvstore_url", kvstore_url)
    return reached

"""Every official checkpoint by name (the built-in ``zoo`` and local records), and the cache.

An entry (:class:`iln_jax.pretrained.entry.Pretrained`) says everything a faithful evaluation
needs. ``size``/``sha256`` are None until someone has a verified copy; ``python -m
iln_jax.pretrained record NAME`` then writes them to the local records file
``<cache>/registry.json`` (and prints the line to paste into ``zoo.py``).

``<cache>/registry.json`` maps names to records. For a built-in name only ``url``, ``size`` and
``sha256`` may be given (e.g. a lab mirror of a Google Drive file); a new name takes a whole entry
(the fields of :class:`Pretrained` except ``name``), e.g. a lab's own checkpoints.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from pathlib import Path
from typing import Optional

from iln_jax.pretrained.entry import Pretrained
from iln_jax.pretrained.errors import PretrainedError
from iln_jax.pretrained.zoo import ZOO

CACHE_ENV = "ILN_JAX_CACHE"
RECORDS_FILE = "registry.json"
OVERRIDABLE = ("url", "size", "sha256")


def cache_dir(path: Optional[str | os.PathLike] = None) -> Path:
    """``path``, else ``$ILN_JAX_CACHE``, else ``$XDG_CACHE_HOME/iln_jax`` (default ``~/.cache/iln_jax``)."""
    if path is None:
        path = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iln_jax"
    return Path(path).expanduser()


def download_path(entry: Pretrained, cache: Optional[str | os.PathLike] = None) -> Path:
    """Where the official file lives in the cache (where to put a hand-downloaded copy)."""
    return cache_dir(cache) / "downloads" / entry.file_name


def converted_path(entry: Pretrained, cache: Optional[str | os.PathLike] = None) -> Path:
    """The Orbax copy of the converted weights (a training-run layout: ``eval.py --workdir`` reads it)."""
    return cache_dir(cache) / "converted" / entry.name


def _records_path(cache) -> Path:
    return cache_dir(cache) / RECORDS_FILE


def read_records(cache: Optional[str | os.PathLike] = None) -> dict[str, dict]:
    path = _records_path(cache)
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PretrainedError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(records, dict) or not all(isinstance(v, dict) for v in records.values()):
        raise PretrainedError(f"{path} must map model names to objects")
    return records


def _apply_record(builtin: Optional[Pretrained], name: str, record: dict, origin: Path) -> Pretrained:
    if builtin is not None:
        extra = sorted(set(record) - set(OVERRIDABLE))
        if extra:
            raise PretrainedError(f"{origin}: {name!r} is a built-in model; only {', '.join(OVERRIDABLE)} may be "
                                  f"set for it, not {', '.join(extra)}")
        entry = dataclasses.replace(builtin, **record)
    else:
        fields = {f.name for f in dataclasses.fields(Pretrained)} - {"name"}
        extra = sorted(set(record) - fields)
        if extra:
            raise PretrainedError(f"{origin}: {name!r} has unknown field(s) {', '.join(extra)}; "
                                  f"valid: {', '.join(sorted(fields))}")
        try:
            entry = Pretrained(name=name, **record)
        except TypeError as e:  # a required field is missing
            raise PretrainedError(f"{origin}: {name!r}: {e}") from None
    entry.validate(str(origin))
    return entry


def entries(cache: Optional[str | os.PathLike] = None) -> dict[str, Pretrained]:
    """Every model by name: the built-in zoo with the local records applied."""
    out = {e.name: e for e in ZOO}
    origin = _records_path(cache)
    for name, record in read_records(cache).items():
        out[name] = _apply_record(out.get(name), name, record, origin)
    return out


def get(name: str, cache: Optional[str | os.PathLike] = None) -> Pretrained:
    """The entry called ``name``; an unknown name lists the closest ones."""
    known = entries(cache)
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PretrainedError(f"Unknown pretrained model {name!r}{hint} (python -m iln_jax.pretrained list)")
    return known[name]


def names(cache: Optional[str | os.PathLike] = None) -> list[str]:
    return list(entries(cache))


def record(name: str, *, size: int, sha256: str, cache: Optional[str | os.PathLike] = None) -> Path:
    """Write ``size``/``sha256`` of a verified copy of ``name`` into the local records file."""
    get(name, cache)  # unknown names raise
    path = _records_path(cache)
    records = read_records(cache)
    records.setdefault(name, {}).update(size=int(size), sha256=sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path

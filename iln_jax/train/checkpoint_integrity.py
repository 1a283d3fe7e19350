"""Is a saved step complete and readable? One phrase saying what is wrong, or None.

A step directory ``checkpoints/<step>`` counts only when every item it needs is there and
readable:

* ``state``: its tree metadata (``_METADATA``) parses, and, with ``read_arrays``, every array
  chunk of its OCDBT database can be read (through TensorStore directly, so a damaged file is
  reported as one error instead of Orbax's burst of asynchronous tracebacks). This reads the
  checkpoint's bytes once; it is done for the step a run resumes from, not at every save.
* ``data``: one grain iterator state per process, ``process_<i>-of-<n>.json``, non-empty valid JSON
  (an iterator restarted from scratch would silently change the run).
* ``config``: the run's config, valid JSON.

Orbax commits a step by renaming its temporary directory, so a process killed mid-save leaves
only ``<step>.orbax-checkpoint-tmp*`` behind, which no listing counts. What these checks catch
is damage after the commit (deleted or truncated files, an interrupted copy, a full disk during
an earlier, non-atomic transfer) and items a checkpoint never had.

Bit flips inside array data are not detected: neither Orbax nor TensorStore checksums chunks.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable, Optional

import tensorstore as ts
from etils import epath

STATE, DATA, CONFIG = "state", "data", "config"
CONFIG_FILE = "metadata"  # Orbax's JsonCheckpointHandler file name
_STATUS = re.compile(r"\b[A-Z][A-Z_]{3,}: ")


def data_file(process_index: int, process_count: int) -> str:
    """grain's iterator state file of one process."""
    return f"process_{process_index}-of-{process_count}.json"


def problem(step_dir: epath.Path, items: Iterable[str], *, process_count: int = 1,
            read_arrays: bool = False) -> Optional[str]:
    """What makes ``step_dir`` unusable (e.g. ``"data/process_0-of-1.json is empty"``), or None."""
    for item in items:
        if not (step_dir / item).is_dir():
            return f"its '{item}' item is missing"
    items = set(items)
    if STATE in items:
        found = _state_problem(step_dir / STATE, read_arrays)
        if found:
            return found
    if DATA in items:
        for i in range(process_count):
            found = _json_problem(step_dir / DATA / data_file(i, process_count), f"{DATA}/{data_file(i, process_count)}")
            if found:
                return found
    if CONFIG in items:
        found = _json_problem(step_dir / CONFIG / CONFIG_FILE, f"{CONFIG}/{CONFIG_FILE}")
        if found:
            return found
    return None


def _json_problem(path: epath.Path, name: str) -> Optional[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return f"{name} is missing"
    except (OSError, UnicodeDecodeError) as e:
        return f"{name} cannot be read ({e})"
    if not text.strip():
        return f"{name} is empty"
    try:
        json.loads(text)
    except ValueError as e:
        return f"{name} is not valid JSON ({e})"
    return None


def _state_problem(state_dir: epath.Path, read_arrays: bool) -> Optional[str]:
    meta = state_dir / "_METADATA"
    found = _json_problem(meta, f"{STATE}/_METADATA")
    if found:
        return found
    if read_arrays and (state_dir / "manifest.ocdbt").is_file():
        return _unreadable_array(state_dir)
    return None


def _unreadable_array(state_dir: epath.Path) -> Optional[str]:
    """Read every key of the state's OCDBT database; the first failure, as a phrase."""
    try:
        kv = ts.KvStore.open({"driver": "ocdbt", "base": kvstore_url(state_dir)}).result()
        keys = kv.list().result()
    except Exception as e:  # noqa: BLE001 - any TensorStore failure means "unreadable"
        return f"{STATE}/ cannot be opened ({short_reason(e)})"
    reads = [kv.read(key) for key in keys]
    for key, read in zip(keys, reads):
        try:
            result = read.result()
        except Exception as e:  # noqa: BLE001
            return f"array {key.decode(errors='replace').split('/')[0]} cannot be read ({short_reason(e)})"
        if result.state != "value":
            return f"array {key.decode(errors='replace').split('/')[0]} is missing from {STATE}/"
    return None


def kvstore_url(directory: epath.Path) -> str:
    """TensorStore's URL for a directory: ``gs://bucket/dir/`` (its GCS driver) or ``file:///abs/dir/``."""
    text = str(directory).rstrip("/")
    return text + "/" if "://" in text else f"file://{os.path.abspath(text)}/"


def short_reason(error: BaseException, limit: int = 300) -> str:
    """One line for a (possibly chained, multi-line) Orbax/TensorStore error: the deepest
    ``STATUS_CODE: ...`` message in the chain, else the first line."""
    best, seen = None, set()
    e: Optional[BaseException] = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for line in str(e).splitlines():
            m = _STATUS.search(line)
            if m:
                best = line[m.start():].strip()
                break
        e = e.__cause__ or e.__context__
    if best is None:
        best = next((s.strip() for s in str(error).splitlines() if s.strip()), type(error).__name__)
    return best if len(best) <= limit else best[:limit - 3] + "..."

"""``load_pretrained(NAME)``: find or download the official file, verify it, convert it once, and
keep the converted weights as an Orbax checkpoint in the training-run layout.

Later loads read that checkpoint through ``iln_jax.evaluation.load_run`` and need neither the
``.pth`` nor PyTorch. The converted copy remembers the entry it was made from and the sha256 of
its source; it is made again when the entry's constructor arguments change or its recorded
sha256 is not the source's.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from iln_jax import convert
from iln_jax.convert.state_dict import load_state_dict, read_pth
from iln_jax.evaluation.checkpoints import CheckpointMismatchError, LoadedModel, guess_arch, load_run
from iln_jax.pretrained import transfer
from iln_jax.pretrained.entry import Pretrained
from iln_jax.pretrained.errors import DownloadError, NotDownloadableError, PretrainedError
from iln_jax.pretrained.registry import converted_path, download_path, get
from iln_jax.train.checkpoint import Checkpointer, load_config

log = logging.getLogger(__name__)


def _entry(name_or_entry, cache) -> Pretrained:
    if isinstance(name_or_entry, Pretrained):
        name_or_entry.validate("the given entry")
        return name_or_entry
    return get(name_or_entry, cache)


def _say(message: str, progress: bool) -> None:
    if progress:
        print(f"[pretrained] {message}", flush=True)
    else:
        log.info(message)


def _unrecorded_hint(entry: Pretrained, digest: str) -> str:
    return (f"{entry.name}: sha256 {digest} is not recorded in the registry; once this copy is verified "
            f"(e.g. it reproduces the paper's numbers), pin it with: python -m iln_jax.pretrained record {entry.name}")


def fetch(name_or_entry, *, cache_dir: Optional[str | os.PathLike] = None, progress: bool = True,
          hint_unrecorded: bool = True) -> tuple[Path, str]:
    """``(path, sha256)`` of the verified official file in the cache, downloading it when it has a direct URL.

    A failed download says where to put a copy fetched by hand. ``hint_unrecorded``: say how to pin
    a file whose sha256 the registry does not record yet (``record`` itself does not need telling)."""
    entry = _entry(name_or_entry, cache_dir)
    path = download_path(entry, cache_dir)
    if path.is_file():
        digest = transfer.verify(path, size=entry.size, sha256=entry.sha256, what=f"{entry.name}: {path}")
    elif entry.url is None:
        raise NotDownloadableError(f"{entry.name}: {entry.file_name} has no direct download; get it from "
                                   f"{entry.page} and put it at {path}")
    else:
        _say(f"downloading {entry.file_name} from {entry.url}", progress)
        try:
            digest = transfer.download(entry.url, path, size=entry.size, sha256=entry.sha256, progress=progress)
        except DownloadError as e:
            raise DownloadError(f"{e}; or download that URL by hand (page: {entry.page}) and put the file at "
                                f"{path}") from None
    if entry.sha256 is None and hint_unrecorded:  # said even without progress output: it is how a copy gets pinned
        print(f"[pretrained] {_unrecorded_hint(entry, digest)}", flush=True)
    return path, digest


def _fingerprint(entry: Pretrained) -> dict:
    """What the converted weights depend on (JSON-comparable)."""
    return json.loads(json.dumps({"arch": entry.arch, "constructor": entry.constructor_kwargs(),
                                  "param_key": entry.param_key, "file_name": entry.file_name}))


def _official_state_dict(entry: Pretrained, path: Path) -> dict:
    """The state_dict the official test loads: ``param_key`` when the file has it, else the official
    loaders' fallback (BasicSR: ``params``; SwinIR: the whole file), as ``load_state_dict`` picks."""
    try:
        obj = read_pth(str(path))
    except ValueError as e:  # not a readable .pth: say which model, and how to get a fresh copy
        first = str(e).splitlines()[0]  # torch's own explanation runs over several lines
        raise PretrainedError(f"{entry.name}: {first}; delete {path} and run again to fetch it afresh") from None
    key = entry.param_key if isinstance(obj, Mapping) and entry.param_key in obj else None
    return load_state_dict(obj if key is None else obj[key])


def _convert(entry: Pretrained, path: Path, digest: str, target: Path) -> None:
    sd = _official_state_dict(entry, path)
    kwargs = entry.constructor_kwargs()
    try:
        _, variables = convert.from_torch(entry.arch, sd, **kwargs)
    except convert.ConversionError as e:
        guess = guess_arch(sd)
        hint = f"\n  (the keys look like arch {guess!r})" if guess and guess != entry.arch else ""
        raise CheckpointMismatchError(f"{entry.name}: {path}: {e}{hint}") from None
    model_arch, norm, flax_kwargs = convert.model_args(entry.arch, **kwargs)
    config = {"model": {"arch": model_arch, "norm": norm,
                        "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in flax_kwargs.items()}},
              "data": entry.data_settings(),
              "pretrained": {**_fingerprint(entry), "name": entry.name, "source_sha256": digest,
                             "source_size": path.stat().st_size}}
    state = {"params": variables["params"]}
    others = {k: v for k, v in variables.items() if k != "params"}
    if others:
        state["model_state"] = others
    if target.exists():
        shutil.rmtree(target)
    ckpt = Checkpointer(target / "checkpoints", max_to_keep=1, save_every=1, async_save=False)
    ckpt.save(0, jax.tree.map(np.asarray, state), config=config, force=True)
    ckpt.close()


def _cached_config(target: Path) -> Optional[dict]:
    if not (target / "checkpoints").is_dir():
        return None
    try:
        return load_config(target)
    except Exception:  # noqa: BLE001 - an unreadable cache is remade
        return None


def load_pretrained(name_or_entry, *, cache_dir: Optional[str | os.PathLike] = None,
                    progress: bool = True) -> LoadedModel:
    """The ``LoadedModel`` (module with the official padding, variables, task settings) of a
    registry name (or a :class:`Pretrained` entry)."""
    entry = _entry(name_or_entry, cache_dir)
    target = converted_path(entry, cache_dir)
    config = _cached_config(target)
    saved = (config or {}).get("pretrained", {})
    fresh = {k: saved.get(k) for k in _fingerprint(entry)} == _fingerprint(entry) and \
        (entry.sha256 is None or saved.get("source_sha256") == entry.sha256)
    if not fresh:
        path, digest = fetch(entry, cache_dir=cache_dir, progress=progress)
        _say(f"converting {path.name} ({entry.arch}) once into {target}", progress)
        _convert(entry, path, digest, target)
    loaded = load_run(target, weights="raw")
    return dataclasses.replace(loaded, source=f"{entry.name} ({entry.file_name})", weights=entry.param_key or "auto")

"""Reading PyTorch state_dicts: .pth files, BasicSR ``params``/``params_ema`` wrappers, tensors."""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from iln_jax.dependencies import require
from iln_jax.errors import CheckpointError, CheckpointNotFoundError, one_line

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")


class CheckpointKeyError(CheckpointError, KeyError):
    """A ``param_key`` the file does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _is_array_like(v: Any) -> bool:
    """NumPy/JAX arrays and torch tensors (without importing torch)."""
    return hasattr(v, "shape") and (hasattr(v, "__array__") or hasattr(v, "detach"))


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # torch.Tensor, without importing torch
        return v.detach().cpu().numpy()
    return np.asarray(v)


# How a torch.save file starts: a zip archive (PyTorch >= 1.6) or a pickle (the legacy format).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = 0x80


def _not_a_checkpoint(path: str) -> Optional[str]:
    """Why the file cannot be a torch.save file, judged from its first bytes (None: it might be one)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "the file is empty"
    if head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTOCOL_OPCODE:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a torch.save file (it starts with bytes {head[:8].hex(' ')}, not a zip archive or a pickle)"
    first = one_line(text, 60)
    if first.startswith("version https://git-lfs"):
        kind = "a Git LFS pointer, not the file it points to (git lfs pull)"
    elif first.lower().startswith(("<!doctype html", "<html")):
        kind = "an HTML page (a download that returned a web page instead of the file?)"
    else:
        kind = "a text file"
    return f"not a torch.save file: it is {kind}, starting {first!r}"


def read_pth(path: str) -> Any:
    """The object a ``.pth`` file holds (tensors stay torch tensors); needs PyTorch."""
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"Checkpoint not found: {path}")
    reason = _not_a_checkpoint(path)
    if reason:
        raise CheckpointError(f"Could not read {path} as a PyTorch checkpoint: {reason}")
    torch = require("torch", f"reading {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, KeyError, EOFError, UnpicklingError ...
        raise CheckpointError(f"Could not read {path} as a PyTorch checkpoint: {_load_failure(e)}") from None


def _load_failure(error: Exception) -> str:
    """torch.load's reason, in one line (its weights-only refusals put the reason on a later line)."""
    text = str(error)
    if "Weights only load failed" in text:
        found = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), None)
        if found:
            return (f"it holds objects other than tensors and plain containers ({one_line(found, 160)}); "
                    f"save the state_dict alone")
        return f"not a torch.save file, or damaged/truncated ({type(error).__name__})"
    reason = one_line(text, 200).split(". ")[0] or type(error).__name__
    if isinstance(error, (KeyError, EOFError, IndexError)) or "zip archive" in reason:
        return f"not a torch.save file, or damaged/truncated ({type(error).__name__}: {reason})"
    return reason


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:8]
        kinds = sorted({type(v).__name__ for v in obj.values()})
        return f"a dict with keys {keys}{' ...' if len(obj) > 8 else ''} and values of type {kinds}"
    return f"an object of type {type(obj).__name__}"


def load_state_dict(source: Any, *, param_key: Optional[str] = None) -> dict[str, np.ndarray]:
    """Return ``{official key: numpy array}`` from a path, a wrapper dict or a state_dict.

    BasicSR-style files hold ``{"params": sd}`` and/or ``{"params_ema": sd}``; with both present
    ``params_ema`` is taken (what the official test configs load) unless ``param_key`` says otherwise.
    A leading ``module.`` (DataParallel) is stripped.
    """
    origin = source if isinstance(source, (str, os.PathLike)) else "the given state_dict"
    obj = read_pth(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"Expected a state_dict in {origin}; found {_describe(obj)}")
    if param_key is not None:
        if param_key not in obj:
            raise CheckpointKeyError(f"{origin} has no {param_key!r} entry; top-level keys: {list(obj)[:10]}")
        obj = obj[param_key]
    elif not all(_is_array_like(v) for v in obj.values()):
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            raise CheckpointError(f"Expected a state_dict (names -> tensors) or a wrapper with one of "
                             f"{WRAPPER_KEYS} in {origin}; found {_describe(obj)}")
        obj = obj[wrapper]
    bad = [k for k, v in obj.items() if not _is_array_like(v)]
    if bad:
        raise CheckpointError(f"Entries of {origin} that are not tensors/arrays: {bad[:10]}")
    return {(k[len("module."):] if k.startswith("module.") else k): _to_numpy(v) for k, v in obj.items()}

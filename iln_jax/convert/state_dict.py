"""Reading PyTorch state_dicts: .pth files, BasicSR ``params``/``params_ema`` wrappers, tensors."""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

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


def read_pth(path: str) -> Any:
    """The object a ``.pth`` file holds (tensors stay torch tensors); needs PyTorch."""
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"Checkpoint not found: {path}")
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dev/parity dependency
        raise ImportError(f"Reading {path} needs PyTorch: pip install torch==2.13.0") from e
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"Could not read {path} as a PyTorch checkpoint: the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, KeyError, EOFError, UnpicklingError ...
        reason = one_line(str(e), 200).split(". ")[0] or type(e).__name__
        if isinstance(e, (KeyError, EOFError)) or "zip archive" in reason:
            reason = f"not a torch.save file, or damaged/truncated ({type(e).__name__}: {reason})"
        raise CheckpointError(f"Could not read {path} as a PyTorch checkpoint: {reason}") from None


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

"""Exported restorer files: serialized StableHLO + weights + a little metadata, and the loader.

The file is a NumPy ``.npz`` archive:

* ``stablehlo``: ``jax.export.Exported.serialize()`` of ``restore(weights, x)``, with symbolic batch,
  height and width (``x``: float32 NHWC in [0, 1]; output float32, ``scale`` times larger);
* ``weight_00000`` ...: the weights, in the exported function's order and dtype;
* ``meta``: JSON (arch, norm, source, dtype, scale, padding, multiple, channels, min_size, ...).

This module needs only NumPy and JAX: a serving process loads and runs a file without the model code.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

FORMAT = "iln_jax.export/1"


@dataclasses.dataclass
class ExportedRestorer:
    """A restorer that runs on any image size (>= ``meta["min_size"]``): ``restorer(x)`` with x
    (H, W, C) or (B, H, W, C) float32 in [0, 1]; returns the same rank, H and W times ``meta["scale"]``.

    XLA compiles once per distinct input shape (cached in the process); the exported program is the
    same for every size.
    """

    exported: jax.export.Exported
    weights: list
    meta: dict

    def __post_init__(self):
        self._device_weights = [jax.device_put(w) for w in self.weights]
        self._call = jax.jit(self.exported.call)

    def __call__(self, x) -> jax.Array:
        x = jax.numpy.asarray(x, jax.numpy.float32)
        single = x.ndim == 3
        batch = x[None] if single else x
        channels, least = self.meta["channels"], self.meta["min_size"]
        fixed = (self.meta.get("height"), self.meta.get("width"))
        if batch.ndim != 4 or batch.shape[-1] != channels:
            raise ValueError(f"Expected (H, W, {channels}) or (B, H, W, {channels}) input; got shape {x.shape}")
        if fixed != (None, None) and tuple(batch.shape[1:3]) != fixed:
            raise ValueError(f"This file was exported for {fixed[0]}x{fixed[1]} images; got {batch.shape[1]}x"
                             f"{batch.shape[2]}")
        if min(batch.shape[1:3]) < least:
            raise ValueError(f"Images must be at least {least}x{least} (the model's padding multiple); got "
                             f"{batch.shape[1]}x{batch.shape[2]}")
        out = self._call(self._device_weights, batch)
        return out[0] if single else out

    def as_function(self):
        """``f(x) -> y`` on (B, H, W, C) batches without the size checks of ``__call__``: pure JAX, for
        wrapping in other tracers (``jax.jit``, ``jax.export``, ``jax2tf.convert`` with polymorphic shapes)."""
        weights = self.weights
        return lambda x: self.exported.call(weights, x)

    def save(self, path: str | os.PathLike) -> None:
        arrays = {f"weight_{i:05d}": _storable(np.asarray(w)) for i, w in enumerate(self.weights)}
        meta = {**self.meta, "format": FORMAT, "num_weights": len(self.weights)}
        blob = np.frombuffer(bytes(self.exported.serialize()), np.uint8)
        tmp = f"{os.fspath(path)}.tmp.npz"  # np.savez appends .npz to names without it
        np.savez(tmp, stablehlo=blob, meta=np.asarray(json.dumps(meta)), **arrays)
        os.replace(tmp, path)


def load(path: str | os.PathLike) -> ExportedRestorer:
    """Read an exported restorer file (see the module docstring); no model code is imported."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta: dict[str, Any] = json.loads(str(archive["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
            blob = archive["stablehlo"].tobytes()
            stored = [archive[f"weight_{i:05d}"] for i in range(meta["num_weights"])]
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path} is not an exported restorer file ({type(e).__name__}: {e})") from None
    exported = jax.export.deserialize(bytearray(blob))
    # The exported signature knows each weight's dtype (bfloat16 is stored as its bits).
    weights = [w.view(aval.dtype) for w, aval in zip(stored, exported.in_avals)]
    return ExportedRestorer(exported, weights, meta)


def _storable(w: np.ndarray) -> np.ndarray:
    """NumPy's .npz keeps only its own dtypes: others (bfloat16) are stored as unsigned ints of their size."""
    return w if w.dtype.kind in "biuf" else w.view(f"u{w.dtype.itemsize}")

"""``Restorer``: one object that restores images with a model, compiled once per shape bucket.

    restorer = Restorer(module, variables, bucket=64, tile=0, self_ensemble=False, precision="fp32")
    out = restorer.restore(lq)            # (H, W, C) float32 in [0, 1] -> (H*s, W*s, C) float32, unclipped

Padding. The model's own padding (``module.padding``: "reflect" pads to the next multiple of the
window, "symmetric" always pads by 1..window pixels as the official test scripts) is done here on
the host, and the model is run with ``padding="none"``. With ``bucket=0`` the padded size is
exactly the model's, so the output equals ``module.apply`` bit for bit. With ``bucket=b`` the padded
size is further rounded up to a multiple of ``lcm(b, window)``, so a folder of differently sized
images needs a handful of compilations instead of one per image. Padding further is not free of
effects: pixels within the receptive field of the bottom/right border see more mirrored context
than the official padding gives them, and holistic norms (i-LN, LN*, InstanceNorm) take their
per-image statistics over the larger padded map: a few thousandths to hundredths of a dB, more for
i-LN than LN (docs/design_measurements.md). Tiles likewise give i-LN per-tile statistics.

Compilation. Executables are compiled ahead of time per padded input shape and cached
(``compiled_shapes``). Before the first run of a shape, XLA's buffer assignment tells how much
memory the call needs; if that exceeds what the device (or, on CPU, the host) has free, the
restorer switches to tiled inference when ``auto_tile`` is set and otherwise raises
:class:`InsufficientMemoryError` saying which tile size would fit.

Tiling (``tile > 0``) and the x8 self-ensemble are in ``tiling.py`` and ``ensemble.py``;
``precision`` is one of ``iln_jax.inference.precision.PRECISIONS``.

Data parallel (``mesh=``, a 1-D mesh over every device of every process, e.g. the training mesh):
:meth:`Restorer.restore_many` restores a list of images as global batches of one image per device,
images of the same padded shape together, the variables replicated. Every process must call it
with the same images in the same order (as every process holds the same eval set); every process
gets every output back. Each device runs the one-image program (``shard_map``); XLA compiles that
multi-device program on its own, so outputs may differ from one device in the last float bit
(at most 1 ulp), which leaves the uint8 images, and so PSNR/SSIM, unchanged. (Tiling, the
self-ensemble and automatic tiling restore one image at a time on one device, as without a mesh.)
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from iln_jax.errors import IlnJaxError
from iln_jax import xla_options
from iln_jax.inference import ensemble, precision as precision_lib, tiling
from iln_jax.layers.padding import PADDINGS

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = 32
# Candidate tile sides tried by automatic tiling, largest first.
_AUTO_TILES = (1024, 768, 512, 384, 256, 192, 128, 96, 64, 48, 32, 16)
# Fraction of the free memory a single call may plan to use.
_MEMORY_HEADROOM = 0.8


class InsufficientMemoryError(IlnJaxError, MemoryError):
    """An image needs more memory than is available; the message says which tile size fits."""


def input_multiple(module) -> int:
    """The size the model pads its input to a multiple of (its ``input_multiple``: the window for the
    SR transformers, 8 for the U-Nets); 1 for a module that does not pad."""
    return int(getattr(module, "input_multiple", 1))


def output_scale(module) -> int:
    return int(getattr(module, "scale", 1))


def padded_size(size: int, multiple: int, mode: str, bucket: int = 0) -> int:
    """The padded length of one axis: the model's rule, then rounded up to the bucket."""
    if mode == "reflect":
        out = -(-size // multiple) * multiple
    elif mode == "symmetric":
        out = (size // multiple + 1) * multiple
    elif mode == "none":
        if size % multiple:
            raise ValueError(f"Input size {size} is not a multiple of {multiple} and padding='none'")
        out = size
    else:
        raise ValueError(f"Unknown padding {mode!r}; valid: {', '.join(PADDINGS)}")
    if bucket:
        step = math.lcm(bucket, multiple)
        out = -(-out // step) * step
    return out


def count_shapes(sizes, multiple: int, mode: str, bucket: int = 0) -> int:
    """How many distinct padded (h, w) -- compilations -- a list of image sizes needs."""
    return len({(padded_size(h, multiple, mode, bucket), padded_size(w, multiple, mode, bucket)) for h, w in sizes})


def choose_bucket(sizes, multiple: int, mode: str, max_shapes: int) -> int:
    """The bucket for a folder of images of ``sizes`` ((h, w) pairs): 0 (exact shapes, the official
    padding) when they need at most ``max_shapes`` compilations, else the smallest multiple of the
    model's window that brings them down to ``max_shapes`` (the least extra padding)."""
    sizes = [tuple(s) for s in sizes]
    if mode == "none" or count_shapes(sizes, multiple, mode) <= max(1, max_shapes):
        return 0
    largest = max(max(s) for s in sizes) + 2 * multiple
    for bucket in range(2 * multiple, largest + multiple, multiple):
        if count_shapes(sizes, multiple, mode, bucket) <= max_shapes:
            return bucket
    return largest


def pad_batch(x: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """Pad an NHWC batch at the bottom/right to (height, width) as ``layers.padding.pad_to_multiple``:
    'reflect' unless a pad reaches the image size (then 'symmetric', like the model), 'symmetric'."""
    h, w = x.shape[1:3]
    ph, pw = height - h, width - w
    if ph == pw == 0:
        return x
    np_mode = "symmetric" if mode == "symmetric" or ph >= h or pw >= w else "reflect"
    return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=np_mode)


def free_memory_bytes(device=None) -> Optional[int]:
    """Free memory of ``device``: the allocator's limit minus use on GPU/TPU, MemAvailable on CPU."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def planned_bytes(compiled) -> Optional[int]:
    """Bytes XLA's buffer assignment plans for one call (arguments + outputs + temporaries)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


_EXECUTABLES: dict[tuple, tuple[Any, Optional[int]]] = {}


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return str(treedef), tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


def _options_key(options: Optional[dict]) -> tuple:
    return tuple(sorted((options or {}).items()))


def _local_copy(tree):
    """One local replica of a (possibly multi-process) replicated tree."""
    return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def clear_cache() -> None:
    """Forget every compiled executable (they hold device memory for their constants only)."""
    _EXECUTABLES.clear()


class Restorer:
    def __init__(self, module, variables: dict, *, precision: str = "fp32", padding: Optional[str] = None,
                 bucket: int = 0, tile: int = 0, tile_overlap: int = DEFAULT_OVERLAP, tile_batch: int = 1,
                 blend: str = "linear", self_ensemble: bool = False, auto_tile: bool = False,
                 memory_limit_bytes: Optional[int] = None, mesh: Optional[Mesh] = None,
                 compiler_options: Optional[dict] = None):
        module, variables = precision_lib.for_precision(module, variables, precision)
        self.precision = precision
        self.padding = padding or getattr(module, "padding", "none")
        if self.padding not in PADDINGS:
            raise ValueError(f"Unknown padding {self.padding!r}; valid: {', '.join(PADDINGS)}")
        if self.padding == "none" and bucket:
            raise ValueError("bucket > 0 pads inputs, which padding='none' forbids")
        if blend not in tiling.BLENDS:
            raise ValueError(f"Unknown blend {blend!r}; valid: {', '.join(tiling.BLENDS)}")
        self.multiple = input_multiple(module)
        self.scale = output_scale(module)
        self.bucket, self.tile, self.tile_overlap, self.tile_batch = bucket, tile, tile_overlap, tile_batch
        self.blend, self.self_ensemble, self.auto_tile = blend, self_ensemble, auto_tile
        self.memory_limit_bytes = memory_limit_bytes
        self.module = module.clone(padding="none") if hasattr(module, "padding") else module
        self.mesh = mesh
        self.compiler_options = xla_options.tuned() if compiler_options is None else compiler_options
        if mesh is not None:
            self._replicated, self._batched = NamedSharding(mesh, P()), NamedSharding(mesh, P(mesh.axis_names[0]))
            self.mesh_variables = jax.device_put(variables, self._replicated)
            # shard_map: each device runs the one-image program, not a partitioned batch program.
            axis = mesh.axis_names[0]
            self._mesh_fn = jax.jit(jax.shard_map(lambda v, x: self.module.apply(v, x), mesh=mesh,
                                                  in_specs=(P(), P(axis)), out_specs=P(axis)))
            variables = _local_copy(variables)  # the one-device path (tiles, ensemble) uses one replica
        self.variables = jax.device_put(variables)
        self._fn = jax.jit(lambda v, x: self.module.apply(v, x))
        self._compiled: dict[tuple, Any] = {}
        self._mesh_shapes: dict[tuple, None] = {}
        self.planned: dict[tuple, Optional[int]] = {}
        self.tiled_images = 0

    # -- compilation ---------------------------------------------------------------------------
    @property
    def compiled_shapes(self) -> list[tuple]:
        """Padded one-image shapes compiled (on one device, or on the mesh)."""
        return list(dict.fromkeys([*self._compiled, *self._mesh_shapes]))

    def padded_shape(self, n: int, h: int, w: int, c: int) -> tuple[int, int, int, int]:
        return (n, padded_size(h, self.multiple, self.padding, self.bucket),
                padded_size(w, self.multiple, self.padding, self.bucket), c)

    def executable(self, shape: tuple[int, ...]):
        """The compiled apply for a padded NHWC input shape (compiled on first use).

        Executables are shared process-wide between restorers of the same module, variable
        shapes/dtypes and input shape (e.g. a precision sweep re-creating restorers).
        """
        if shape not in self._compiled:
            key = (repr(self.module), _signature(self.variables), shape, _options_key(self.compiler_options))
            if key not in _EXECUTABLES:
                x = jax.ShapeDtypeStruct(shape, jnp.float32)
                compiled = self._fn.lower(self.variables, x).compile(self.compiler_options)
                _EXECUTABLES[key] = (compiled, planned_bytes(compiled))
            self._compiled[shape], self.planned[shape] = _EXECUTABLES[key]
        return self._compiled[shape]

    def mesh_executable(self, shape: tuple[int, ...]):
        """The compiled apply for a global batch of ``shape`` sharded over the mesh (one image per device)."""
        key = ("mesh", repr(self.module), _signature(self.mesh_variables), shape, tuple(self.mesh.devices.flat),
               _options_key(self.compiler_options))
        if key not in _EXECUTABLES:
            x = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=self._batched)
            compiled = self._mesh_fn.lower(self.mesh_variables, x).compile(self.compiler_options)
            _EXECUTABLES[key] = (compiled, None)
        return _EXECUTABLES[key][0]

    def _limit(self) -> Optional[int]:
        if self.memory_limit_bytes is not None:
            return self.memory_limit_bytes
        free = free_memory_bytes()
        return None if free is None else int(free * _MEMORY_HEADROOM)

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether one call on ``shape`` fits in memory (True when the backend cannot tell)."""
        self.executable(shape)
        need, limit = self.planned.get(shape), self._limit()
        return need is None or limit is None or need <= limit

    # -- running -------------------------------------------------------------------------------
    def apply_batch(self, batch: np.ndarray) -> np.ndarray:
        """(n, h, w, C) float -> (n, h*s, w*s, C_out) float32, unclipped (NaN/inf kept)."""
        batch = np.asarray(batch, np.float32)
        n, h, w, c = batch.shape
        shape = self.padded_shape(n, h, w, c)
        out = self.executable(shape)(self.variables, pad_batch(batch, shape[1], shape[2], self.padding))
        out = np.asarray(jax.device_get(out)).astype(np.float32)
        return out[:, :h * self.scale, :w * self.scale]

    def restore(self, image: np.ndarray) -> np.ndarray:
        """Restore one (H, W, C) image -> (H*s, W*s, C) float32, unclipped."""
        if image.ndim != 3:
            raise ValueError(f"restore takes one (H, W, C) image; got shape {image.shape}")
        if self.self_ensemble:
            return ensemble.self_ensemble(self._restore_one, image)
        return self._restore_one(image)

    def restore_many(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Restore (H, W, C) images, data parallel over the mesh when there is one (see the module
        docstring); the outputs in the input order, (H*s, W*s, C) float32, unclipped."""
        if self.mesh is None or self.tile or self.self_ensemble or self.auto_tile:
            return [self.restore(im) for im in images]
        n = self.mesh.size
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.padded_shape(1, *im.shape)[1:], []).append(i)
        outputs: list[Optional[np.ndarray]] = [None] * len(images)
        for (ph, pw, c), members in groups.items():
            for first in range(0, len(members), n):
                chunk = members[first:first + n]
                padded = [pad_batch(np.asarray(images[i], np.float32)[None], ph, pw, self.padding)[0] for i in chunk]
                batch = np.stack(padded + [padded[-1]] * (n - len(chunk)))  # a full batch: one image per device
                x = jax.make_array_from_callback(batch.shape, self._batched, lambda index, batch=batch: batch[index])
                out = self.mesh_executable(batch.shape)(self.mesh_variables, x)
                self._mesh_shapes[(1, ph, pw, c)] = None
                out = (np.asarray(multihost_utils.process_allgather(out, tiled=True))
                       if jax.process_count() > 1 else np.asarray(out))
                for i, o in zip(chunk, out.astype(np.float32)):
                    h, w = images[i].shape[:2]
                    outputs[i] = o[:h * self.scale, :w * self.scale]
        return outputs

    def _restore_one(self, image: np.ndarray) -> np.ndarray:
        h, w, c = image.shape
        if self.tile:
            return self._tiled(image, self.tile)
        shape = self.padded_shape(1, h, w, c)
        if not self.fits(shape):
            need, limit = self.planned[shape], self._limit()
            tile = self.auto_tile_size(c, shape)
            advice = (f"Restoring a {h}x{w} image needs about {need / 2**30:.2f} GiB but only "
                      f"{limit / 2**30:.2f} GiB is available")
            if not self.auto_tile:
                raise InsufficientMemoryError(
                    f"{advice}. Use tiled inference: Restorer(tile={tile}, tile_overlap={self.tile_overlap}) / "
                    f"eval.py --tile {tile} --tile-overlap {self.tile_overlap}, or auto_tile=True (--auto-tile).")
            log.warning("%s; restoring it in %dx%d tiles instead", advice, tile, tile)
            return self._tiled(image, tile)
        return self.apply_batch(image[None])[0]

    def _tiled(self, image: np.ndarray, tile: int) -> np.ndarray:
        self.tiled_images += 1
        return tiling.tiled_restore(self.apply_batch, image, tile=tile, overlap=self.tile_overlap,
                                    scale=self.scale, tile_batch=self.tile_batch, blend=self.blend)

    def auto_tile_size(self, channels: int, full_shape: Optional[tuple] = None) -> int:
        """The largest candidate tile (a multiple of the model's padding multiple) that fits in memory.

        Memory grows about linearly with the pixel count, so the whole image's plan gives a first
        guess; each guess is confirmed by compiling that tile shape (which is then cached).
        """
        candidates = sorted({max(self.multiple, t - t % self.multiple) for t in _AUTO_TILES}, reverse=True)
        limit = self._limit()
        need = self.planned.get(full_shape) if full_shape is not None else None
        if need and limit:
            per_pixel = need / (full_shape[0] * full_shape[1] * full_shape[2])
            fitting = [t for t in candidates if self.tile_batch * t * t * per_pixel <= limit]
            candidates = fitting or candidates[-1:]
        for t in candidates:
            if self.fits(self.padded_shape(self.tile_batch, t, t, channels)):
                return t
        raise InsufficientMemoryError(f"Even a {candidates[-1]}x{candidates[-1]} tile does not fit in memory")

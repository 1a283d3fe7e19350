"""``export_restorer``: a model and its weights -> an :class:`ExportedRestorer` whose StableHLO has
symbolic batch, height and width.

The exported function is ``restore(weights, x)``: it casts ``x`` (float32, NHWC) to the model's
dtype, pads it to the model's multiple with the model's own convention, runs the model, crops the
output back to ``scale`` times the input size and returns float32. The padding cannot be the
model's ``pad_to_multiple``: jnp.pad's reflect/symmetric modes need a concrete pad width, and the
amount ``(-h) % m`` is symbolic. So the image is padded by a *static* ``m - 1`` (reflect) or ``m``
(symmetric) and then cut at the padded size, written ``m * floordiv(h + m - 1, m)`` /
``m * (floordiv(h, m) + 1)`` so that the model's own size checks can prove it a multiple of ``m``.
The pixels are the ones ``pad_to_multiple`` makes: reflecting more rows starts with the same rows.
That needs ``h, w >= m``, which the export states as a constraint (``min_size``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from iln_jax.errors import IlnJaxError
from iln_jax.export.artifact import ExportedRestorer

DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


class ExportError(IlnJaxError, ValueError):
    """The model cannot be exported as asked; the message says why and what to do instead."""


def pad_to_multiple_symbolic(x: jnp.ndarray, multiple: int, mode: str) -> jnp.ndarray:
    """Bottom/right padding of ``iln_jax.layers.padding.pad_to_multiple`` for symbolic H and W >= multiple."""
    if mode == "none" or multiple == 1:
        return x
    h, w = x.shape[1:3]
    if mode == "reflect":  # to the next multiple, only where needed
        static, height, width = multiple - 1, multiple * ((h + multiple - 1) // multiple), \
            multiple * ((w + multiple - 1) // multiple)
    elif mode == "symmetric":  # always 1..multiple pixels (the SwinIR/DRCT test scripts)
        static, height, width = multiple, multiple * (h // multiple + 1), multiple * (w // multiple + 1)
    else:
        from iln_jax.layers.padding import PADDINGS  # on use, as in export_restorer
        raise ExportError(f"Unknown padding {mode!r}; valid: {', '.join(PADDINGS)}")
    return jnp.pad(x, ((0, 0), (0, static), (0, static), (0, 0)), mode=mode)[:, :height, :width]


def _channels(module) -> int:
    return int(getattr(module, "in_chans", getattr(module, "inp_channels", 3)))


def _portable_attention(module, platforms: Optional[Sequence[str]]):
    """``attention_impl="auto"`` picks the cuDNN kernel when *tracing* on a GPU; an artifact that must
    also run elsewhere gets the portable XLA attention instead (an explicit "cudnn" is refused)."""
    impl = getattr(module, "attention_impl", None)
    targets = tuple(platforms or (jax.export.default_export_platform(),))
    if impl not in ("auto", "cudnn") or set(targets) == {"cuda"}:
        return module
    if impl == "cudnn":
        raise ExportError(f"attention_impl='cudnn' runs only on CUDA GPUs, but the export targets "
                          f"{', '.join(targets)}: use attention_impl='auto' or 'xla'")
    return module.clone(attention_impl="xla")


def _portable_convs(module, platforms: Optional[Sequence[str]]):
    """``conv_impl="auto"`` formulates convolutions for the backend that *traces* them (XLA:CPU's
    workarounds on a CPU); an artifact that must run elsewhere gets XLA's own convolutions."""
    here = jax.export.default_export_platform()
    if getattr(module, "conv_impl", "xla") == "xla" or set(platforms or (here,)) == {here}:
        return module
    return module.clone(conv_impl="xla")


def export_restorer(module, variables: dict, *, dtype: str = "float32", padding: Optional[str] = None,
                    height: Optional[int] = None, width: Optional[int] = None,
                    platforms: Optional[Sequence[str]] = None, meta: Optional[dict] = None) -> ExportedRestorer:
    """Export ``module.apply(variables, x)`` with the model's padding inside.

    dtype: float32 | bfloat16 | float16 -- weights and activations (``iln_jax.inference.precision``;
    norm statistics stay float32); input and output are float32 either way.
    padding: override the model's (``module.padding``) convention.
    height, width: export one fixed image size (batch stays symbolic) instead of symbolic ones.
    platforms: e.g. ("cpu", "cuda") for one artifact serving both; default: the current backend.
    """
    # Imported on use: ``iln_jax.export.load`` (this package) must run where the model code is absent.
    from iln_jax.inference import precision as precision_lib
    from iln_jax.inference.runner import input_multiple, output_scale
    if dtype not in DTYPES:
        raise ExportError(f"Unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if (height is None) != (width is None):
        raise ExportError("Give both height and width for a fixed-size export, or neither")
    run_module, run_vars = precision_lib.for_precision(module, variables, DTYPES[dtype])
    mode = padding or getattr(module, "padding", "none")
    multiple, scale, channels = input_multiple(module), output_scale(module), _channels(module)
    run_module = _portable_convs(_portable_attention(run_module, platforms), platforms)
    leaves, treedef = jax.tree.flatten(run_vars)
    fixed = height is not None
    if fixed:
        run_module = run_module.clone(padding=mode) if hasattr(run_module, "padding") else run_module
    else:
        run_module = run_module.clone(padding="none") if hasattr(run_module, "padding") else run_module

    def restore(weights, x):
        h, w = x.shape[1:3]
        xp = x if fixed else pad_to_multiple_symbolic(x, multiple, mode)
        y = run_module.apply(jax.tree.unflatten(treedef, weights), xp)
        return y[:, : h * scale, : w * scale].astype(jnp.float32)

    if fixed:
        (b,) = jax.export.symbolic_shape("b")
        shape = (b, height, width, channels)
    else:  # one call: dims from separate calls cannot be mixed
        b, h, w = jax.export.symbolic_shape("b, h, w", constraints=(f"h >= {multiple}", f"w >= {multiple}"))
        shape = (b, h, w, channels)
    args = ([jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves],
            jax.ShapeDtypeStruct(shape, jnp.float32))
    try:
        exported = jax.export.export(jax.jit(restore), platforms=platforms)(*args)
    except Exception as e:  # noqa: BLE001 - the model's own error, reported in one line with the way out
        if fixed:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ExportError(f"{type(module).__name__} cannot be traced with a symbolic image size "
                          f"({type(e).__name__}: {first}); export one fixed size with height=/width= "
                          f"(--height/--width)") from e
    info = {"arch": type(module).__name__, "norm": getattr(module, "norm", None), "dtype": dtype, "scale": scale,
            "padding": mode, "multiple": multiple, "channels": channels, "min_size": 1 if fixed else multiple,
            "height": height, "width": width, "platforms": list(exported.platforms), "jax_version": jax.__version__,
            "attention_impl": getattr(run_module, "attention_impl", None),
            "conv_impl": getattr(run_module, "conv_impl", None),
            **(meta or {})}
    return ExportedRestorer(exported, [jax.device_get(leaf) for leaf in leaves], info)

"""How a model pads its input to a multiple of its window (or of its U-Net's downsampling).

Two conventions come from the official code, and a third says the caller has padded already:

* ``"reflect"``: only where needed, to the next multiple (SwinIR's forward, the HAT/DRCT/Restormer
  wrappers);
* ``"symmetric"``: always by 1..multiple pixels, with a mirror that repeats the edge pixel (the
  SwinIR/DRCT test scripts, which produced the papers' numbers);
* ``"none"``: no padding; the input must be a multiple already. ``Restorer`` pads on the host and
  runs the model this way, and an exported model pads symbolically before it.

A model's ``padding`` field and the inference options take :data:`PADDINGS`; what an official
checkpoint was evaluated with (a pretrained entry, ``python -m iln_jax.export --padding``) is one of
:data:`OFFICIAL_PADDINGS`.
"""
from __future__ import annotations

import jax.numpy as jnp

OFFICIAL_PADDINGS = ("reflect", "symmetric")
PADDINGS = OFFICIAL_PADDINGS + ("none",)


def pad_to_multiple(x: jnp.ndarray, multiple: int, mode: str) -> jnp.ndarray:
    """Pad H and W of an NHWC batch at the bottom/right to a multiple of ``multiple``, by ``mode``
    (one of :data:`PADDINGS`); ``"symmetric"`` adds ``(h // m + 1) * m - h`` rows."""
    h, w = x.shape[1:3]
    if mode == "reflect":
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph == pw == 0:
            return x
        if ph >= h or pw >= w:  # reflect cannot pad more than size-1; torch raises, we fall back
            return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
        return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
    if mode == "symmetric":
        ph, pw = (h // multiple + 1) * multiple - h, (w // multiple + 1) * multiple - w
        return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
    if mode == "none":
        if h % multiple or w % multiple:
            raise ValueError(f"Input size {h}x{w} is not a multiple of {multiple} and padding='none'")
        return x
    raise ValueError(f"Unknown padding {mode!r}; valid: {', '.join(PADDINGS)}")

"""Converter spec for the official DRCT (ming053l/DRCT ``DRCT_arch.DRCT``).

Like SwinIR, every Swin block stores its ``attn.relative_position_index`` and, when shifted
(swin2, swin4), an ``attn_mask`` for the training ``img_size``; both are recomputed and checked.
"""
from __future__ import annotations

import numpy as np

from iln_jax.convert.spec import ArchSpec, sr_example_input
from iln_jax.convert.swinir import SR_SEQUENCES
from iln_jax.layers.window import relative_position_index, shifted_window_mask
from iln_jax.models.drct import RDG_BLOCKS, rdg_block_geometry


def drct_buffers(module) -> dict[str, np.ndarray]:
    out = {}
    for i, heads in enumerate(module.num_heads[: len(module.depths)]):
        for k in range(1, RDG_BLOCKS + 1):
            _, _, ws, shift, _ = rdg_block_geometry(k, module.embed_dim, heads, module.gc, module.window_size,
                                                    module.img_size, module.mlp_ratio)
            if shift > 0:
                mask = shifted_window_mask(module.img_size, module.img_size, ws, shift)
                out[f"layers.{i}.swin{k}.attn_mask"] = np.asarray(mask)
            out[f"layers.{i}.swin{k}.attn.relative_position_index"] = relative_position_index(ws)
    return out


SPEC = ArchSpec(model_arch="drct", sequences=SR_SEQUENCES, example_input=sr_example_input, buffers=drct_buffers)

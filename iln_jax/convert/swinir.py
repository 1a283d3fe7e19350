"""Converter spec for the official SwinIR (JingyunLiang/SwinIR ``network_swinir.SwinIR``)."""
from __future__ import annotations

import numpy as np

from iln_jax.convert.spec import ArchSpec, sr_example_input
from iln_jax.layers.swin import effective_window
from iln_jax.layers.window import relative_position_index, shifted_window_mask

SR_SEQUENCES = frozenset({"layers", "blocks", "conv", "conv_after_body", "conv_before_upsample", "upsample"})


def swinir_buffers(module) -> dict[str, np.ndarray]:
    """Per-block ``relative_position_index`` and, for shifted blocks, the ``attn_mask`` at img_size."""
    out = {}
    for i, depth in enumerate(module.depths):
        for j in range(depth):
            prefix = f"layers.{i}.residual_group.blocks.{j}"
            ws, shift = effective_window(module.img_size, module.window_size,
                                         0 if j % 2 == 0 else module.window_size // 2)
            if shift > 0:
                mask = shifted_window_mask(module.img_size, module.img_size, ws, shift)
                out[f"{prefix}.attn_mask"] = np.asarray(mask)
            out[f"{prefix}.attn.relative_position_index"] = relative_position_index(ws)
    return out


SPEC = ArchSpec(model_arch="swinir", sequences=SR_SEQUENCES, example_input=sr_example_input,
                buffers=swinir_buffers)

"""Converter spec for the official HAT (XPixelGroup/HAT ``hat_arch.HAT``).

HAT keeps no masks (it rebuilds them every forward) and one pair of relative-position indices at
the model level, shared by all blocks: ``relative_position_index_SA`` (window attention) and
``relative_position_index_OCA`` (overlapping cross-attention, negative entries included).
"""
from __future__ import annotations

import numpy as np

from iln_jax.convert.spec import ArchSpec, sr_example_input
from iln_jax.convert.swinir import SR_SEQUENCES
from iln_jax.layers.window import overlap_window_size, overlapping_relative_position_index, relative_position_index

# CAB's nn.Sequential ``cab.{0,2,3}`` and ChannelAttention's ``attention.{1,3}``.
HAT_SEQUENCES = SR_SEQUENCES | {"cab", "attention"}


def hat_buffers(module) -> dict[str, np.ndarray]:
    ws = module.window_size
    return {
        "relative_position_index_SA": relative_position_index(ws),
        "relative_position_index_OCA": overlapping_relative_position_index(
            ws, overlap_window_size(ws, module.overlap_ratio)),
    }


SPEC = ArchSpec(model_arch="hat", sequences=HAT_SEQUENCES, example_input=sr_example_input, buffers=hat_buffers)

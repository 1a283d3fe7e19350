"""Converter spec for the official HINT (joshyZhou/HINT ``HINT_arch.HINT``).

Same module tree and LayerNorm naming as Restormer (see ``convert.restormer``); the HMHA adds
Conv1d weights (``(O, I, 1)``, with biases) under ``attn.intra_modulator`` and
``attn.inter_modulator{1..4}``. The official ``qv_cache`` is a plain attribute, not a buffer, so
checkpoints hold no cache. ``faithful=...`` is accepted like any model field.
"""
from __future__ import annotations

from iln_jax.convert.restormer import NORM_FROM_TORCH, NORM_TO_TORCH, UNET_SEQUENCES, unet_example_input
from iln_jax.convert.spec import ArchSpec

SPEC = ArchSpec(model_arch="hint", sequences=UNET_SEQUENCES, example_input=unet_example_input,
                renames_from_torch=NORM_FROM_TORCH, renames_to_torch=NORM_TO_TORCH)

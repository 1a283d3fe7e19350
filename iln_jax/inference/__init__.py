"""Inference: padding + shape buckets + AOT compile cache (``runner``), tiling, x8 self-ensemble,
low precision (fp16 / bf16 W+F, int8 / int4 weight-only).

    from iln_jax.inference import Restorer
    out = Restorer(module, variables, bucket=64, tile=256, tile_overlap=32).restore(lq)
"""
from iln_jax.inference.ensemble import self_ensemble
from iln_jax.inference.precision import PRECISIONS, for_precision, nonfinite_pixels
from iln_jax.inference.runner import InsufficientMemoryError, Restorer, input_multiple, output_scale
from iln_jax.inference.tiling import tiled_restore

__all__ = ["InsufficientMemoryError", "PRECISIONS", "Restorer", "for_precision", "input_multiple",
           "nonfinite_pixels", "output_scale", "self_ensemble", "tiled_restore"]

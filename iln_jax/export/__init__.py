"""Deployable restorers: serialized StableHLO with symbolic batch, height and width.

    from iln_jax import export
    exported = export.export_restorer(module, variables, dtype="float16")   # padding to the window inside
    exported.save("restorer.npz")
    restore = export.load("restorer.npz")     # needs only jax + numpy, not the model code
    y = restore(x)                            # (H, W, C) or (B, H, W, C) float32 in [0, 1], any size

    python -m iln_jax.export --pretrained swinir-classical-x2 --out swinir_x2.npz
    python -m iln_jax.export --workdir runs/default --dtype float16 --out mine_fp16.npz
"""
from iln_jax.export.artifact import FORMAT, ExportedRestorer, load
from iln_jax.export.exporter import DTYPES, ExportError, export_restorer, pad_to_multiple_symbolic

__all__ = ["DTYPES", "ExportError", "ExportedRestorer", "FORMAT", "export_restorer", "load",
           "pad_to_multiple_symbolic"]

"""Parity with the official PyTorch models: the full-precision setting for comparisons on any
backend (:mod:`iln_jax.parity.precision`) and the golden checks as reports (:mod:`iln_jax.parity.goldens`)."""
from iln_jax.parity.precision import (PARITY_MATMUL_PRECISION, full_precision, precision_settings,
                                      set_parity_precision)

__all__ = ["PARITY_MATMUL_PRECISION", "full_precision", "precision_settings", "set_parity_precision"]

"""Is it the same as PyTorch? Two comparisons with the official models, on the same weights.

    python -m iln_jax.compare ...          one forward pass, module by module (:mod:`.forward`)
    python -m iln_jax.compare train ...    a whole training run in both frameworks, judged against
                                           the chaos floor of float32 training (:mod:`.training`)
"""
from iln_jax.compare.forward import (flax_to_torch_name, format_report, main, parse_args, run_comparison,
                                     to_flax_layout)
from iln_jax.compare.pair import CompareError, ModelPair, build_pair, generic_from_torch, import_object

__all__ = ["CompareError", "ModelPair", "build_pair", "flax_to_torch_name", "format_report", "generic_from_torch",
           "import_object", "main", "parse_args", "run_comparison", "to_flax_layout"]

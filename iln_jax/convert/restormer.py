"""Converter spec for the official Restormer (swz30/Restormer ``restormer_arch.Restormer``).

Every block container (``encoder_level1`` ... ``refinement``) and the ``body`` of Down/Upsample
are ``nn.Sequential``s. The official LayerNorm wraps its parameters in a ``body`` submodule
(``norm1.body.weight``); our norms hold them directly (``norm1.scale``), hence the renames. With
``LayerNorm_type='BiasFree'`` the norm has no bias, so the checkpoint has no ``.body.bias`` keys.
"""
from __future__ import annotations

from iln_jax.convert.spec import ArchSpec
from iln_jax.models.unet_shell import LEVELS, MULTIPLE

UNET_SEQUENCES = frozenset({*LEVELS, "body"})
# Only the norms' affine leaves move; other norms' leaves (branch_scale, running_mean) keep their names.
NORM_FROM_TORCH = ((r"(^|\.)(norm[12])\.body\.(weight|bias)$", r"\1\2.\3"),)
NORM_TO_TORCH = ((r"(^|\.)(norm[12])\.(weight|bias)$", r"\1\2.body.\3"),)


def unet_example_input(module) -> tuple[int, ...]:
    """Parameter shapes do not depend on the input size; the smallest valid one is cheapest."""
    return (1, MULTIPLE, MULTIPLE, module.inp_channels)


SPEC = ArchSpec(model_arch="restormer", sequences=UNET_SEQUENCES, example_input=unet_example_input,
                renames_from_torch=NORM_FROM_TORCH, renames_to_torch=NORM_TO_TORCH)

"""Restormer (Zamir et al., CVPR 2022) in the shared channel-attention U-Net, with ExDA's options.

``create("restormer", **official_kwargs)`` is the official model (MDTA + GDFN in every block).
The ExDA primitives (ICLR 2026, code unreleased; see ``iln_jax.layers.channel_attention``) are
fields of this module, off by default, and ``EXDA_SIZES`` holds the Tiny / Small / Full models.
"""
from __future__ import annotations

import functools

from iln_jax.layers.channel_attention import MDTA
from iln_jax.models.unet_shell import ChannelAttentionUNet

class Restormer(ChannelAttentionUNet):
    """Official fields and defaults (the paper's model); then the ExDA options (the value transform
    is the base class's):

    global_tokens: Global Spatial Tokens per head (0: off); must divide every head width.
    global_token_stride: the pooling stride s (ExDA: 2). global_token_alpha: alpha's init (0.1).
    """

    global_tokens: int = 0
    global_token_stride: int = 2
    global_token_alpha: float = 0.1

    def attention(self, level, dim, heads):
        return functools.partial(MDTA, dim, heads, self.bias, self.value_transform_at(level), self.global_tokens,
                                 self.global_token_stride, self.global_token_alpha, self.dtype)


# ExDA model sizes. The paper reports Tiny ~6M, Small ~10M and Full 22M parameters on a Restormer
# (PromptIR-without-prompts) encoder-decoder but gives no size table and no code, so these are our
# configurations: both primitives everywhere (residual value transform in every block, 4 global
# tokens per head, s = 2) on Restormer's depths with a 4-block bottleneck instead of 8 (the
# 384-channel latent holds most of Restormer's parameters), and one width per size. Counts:
# EXDA_PARAMS, checked in tests/restormer_test.py.
_EXDA = dict(value_transform="residual", value_transform_levels="all", global_tokens=4,
             global_token_stride=2, global_token_alpha=0.1, num_blocks=(4, 6, 6, 4),
             num_refinement_blocks=4, heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False,
             LayerNorm_type="WithBias")
EXDA_SIZES = {
    "tiny": dict(_EXDA, dim=24),
    "small": dict(_EXDA, dim=32),
    "full": dict(_EXDA, dim=48),
}
EXDA_PARAMS = {"tiny": 5_539_932, "small": 9_712_980, "full": 21_545_556}

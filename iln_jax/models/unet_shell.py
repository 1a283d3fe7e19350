"""The 4-level U-Net shared by Restormer and HINT: everything but the attention.

patch_embed -> encoder_level1 -> down1_2 -> encoder_level2 -> down2_3 -> encoder_level3 -> down3_4
-> latent -> up4_3 (+enc3, reduce_chan_level3) -> decoder_level3 -> up3_2 (+enc2, reduce_chan_level2)
-> decoder_level2 -> up2_1 (+enc1, no reduction) -> decoder_level1 -> refinement -> output + input.

Module names are the official ones (``encoder_level1_0`` is ``encoder_level1.0``). Subclasses
choose, per level, the attention factory (None: FFN-only blocks) and the (depth, heads) row of
the constructor lists; that is all that differs between Restormer and HINT. A carry (HINT's
query-key cache) is threaded through every block in forward order; Restormer's stays None.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, ClassVar, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from iln_jax.layers.basic import conv, pixel_shuffle, pixel_unshuffle
from iln_jax.layers.channel_attention import TransformerBlock
from iln_jax.layers.conv import conv_impl_scope
from iln_jax.layers.norm_registry import NormSpec, make_norm
from iln_jax.layers.padding import pad_to_multiple
from iln_jax.models import stacking

LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent",
          "decoder_level3", "decoder_level2", "decoder_level1", "refinement")
LAYERNORM_TYPES = ("WithBias", "BiasFree")
MULTIPLE = 8  # three 2x pixel-unshuffles
# Width of each level in units of ``dim`` (decoder_level1 and refinement stay at 2*dim: the
# official model concatenates the skip without reducing), and the row of num_blocks/heads it uses.
LEVEL_WIDTH = dict(zip(LEVELS, (1, 2, 4, 8, 4, 2, 2, 2)))
LEVEL_ROW = dict(zip(LEVELS, (0, 1, 2, 3, 2, 1, 0, 0)))


class OverlapPatchEmbed(nn.Module):
    """Conv3x3 to ``dim`` channels; officially always bias-free (the model's ``bias`` is not passed)."""

    dim: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        return conv(self.dim, 3, name="proj", use_bias=False, dtype=self.dtype)(x)


class Downsample(nn.Module):
    """Conv3x3 (n -> n/2, no bias) + PixelUnshuffle(2): half the resolution, twice the channels."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        return pixel_unshuffle(conv(x.shape[-1] // 2, 3, name="body_0", use_bias=False, dtype=self.dtype)(x), 2)


class Upsample(nn.Module):
    """Conv3x3 (n -> 2n, no bias) + PixelShuffle(2): twice the resolution, half the channels."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        return pixel_shuffle(conv(2 * x.shape[-1], 3, name="body_0", use_bias=False, dtype=self.dtype)(x), 2)


VALUE_TRANSFORM_LEVELS = {
    "all": frozenset(LEVELS),
    # ExDA's placement ablation; the bottleneck counts as encoder, refinement as decoder.
    "encoder": frozenset({"encoder_level1", "encoder_level2", "encoder_level3", "latent"}),
    "decoder": frozenset({"decoder_level3", "decoder_level2", "decoder_level1", "refinement"}),
}


class ChannelAttentionUNet(nn.Module):
    """Base module; fields up to ``dual_pixel_task`` are the official constructor's (Restormer/HINT)."""

    inp_channels: int = 3
    out_channels: int = 3
    dim: int = 48
    num_blocks: Sequence[int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: Sequence[int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    LayerNorm_type: str = "WithBias"  # noqa: N815 (the official keyword)
    dual_pixel_task: bool = False
    # iln_jax additions
    norm: str = "layernorm"
    norm_eps: Optional[float] = None
    padding: str = "reflect"  # to a multiple of 8, right/bottom, as the official test scripts
    use_checkpoint: bool = False  # rematerialise each block in the backward pass (remat_policy "block")
    bn_axis_name: Optional[str] = None
    dtype: Any = None  # computation dtype (None: float32); parameters stay float32
    # ExDA's non-linear value (iln_jax.layers.channel_attention.NonlinearValue), for any attention:
    # "none" | "residual" (V' = V + g(V)) | "replace" (V' = g(V)), in the levels of
    # ``value_transform_levels``: "all" (ExDA) | "encoder" | "decoder".
    value_transform: str = "none"
    value_transform_levels: str = "all"
    scan_layers: bool = False  # scan the blocks of every level (iln_jax.models.stacking)
    remat_policy: str = "none"  # iln_jax.models.REMAT_POLICIES
    conv_impl: str = "auto"  # iln_jax.layers.conv.CONV_IMPLS (ILN_JAX_CONV overrides it)

    # Whether the blocks thread a state (HINT's cache) that the first attention block creates:
    # scanned, that block runs on its own (the scan carry must keep one structure).
    carries_cache: ClassVar[bool] = False

    def value_transform_at(self, level: str) -> str:
        if self.value_transform_levels not in VALUE_TRANSFORM_LEVELS:
            raise ValueError(f"Unknown value_transform_levels {self.value_transform_levels!r}; "
                             f"valid: {', '.join(VALUE_TRANSFORM_LEVELS)}")
        return self.value_transform if level in VALUE_TRANSFORM_LEVELS[self.value_transform_levels] else "none"

    # -- per-backbone choices ------------------------------------------------------------------
    def attention(self, level: str, dim: int, heads: int) -> Optional[Callable[..., nn.Module]]:
        """The attention factory of a level's blocks, or None for FFN-only blocks."""
        raise NotImplementedError("ChannelAttentionUNet subclasses define attention")

    def level_row(self, level: str) -> int:
        """Which entry of ``num_blocks``/``heads`` a level uses (Restormer's latent: 3)."""
        return LEVEL_ROW[level]

    # -------------------------------------------------------------------------------------------
    @property
    def input_multiple(self) -> int:
        """The model pads its input to a multiple of this (its three 2x downsamplings)."""
        return MULTIPLE

    def norm_name(self) -> str:
        """``LayerNorm_type='BiasFree'`` selects Restormer's bias-free LN when the norm is layernorm.

        For every other norm of the grid the official keyword has no meaning and is ignored.
        """
        if self.LayerNorm_type not in LAYERNORM_TYPES:
            raise ValueError(f"Unknown LayerNorm_type {self.LayerNorm_type!r}; valid: {LAYERNORM_TYPES}")
        if self.norm == "layernorm" and self.LayerNorm_type == "BiasFree":
            return "biasfree_layernorm"
        return self.norm

    def prepare_carry(self, carry, dim: int):
        """The carry as a level of width ``dim`` takes it (HINT pools its cache to ``dim``)."""
        return carry

    def _level_geometry(self, level: str) -> tuple[int, int, int]:
        row = self.level_row(level)
        depth = self.num_refinement_blocks if level == "refinement" else self.num_blocks[row]
        return depth, self.dim * LEVEL_WIDTH[level], self.heads[row]

    def peeled_level(self) -> Optional[str]:
        """The level whose first block runs outside the scan: the first one with attention, when
        the blocks carry a cache (it enters that block as None and leaves it as an array)."""
        if not self.carries_cache:
            return None
        for level in LEVELS:
            _, dim, heads = self._level_geometry(level)
            if self.attention(level, dim, heads) is not None:
                return level
        return None

    def scan_path(self, path: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Where the variable at unrolled ``path`` lives with ``scan_layers`` (``{level}_{i}`` ->
        ``{level}[i]``), and its index (``iln_jax.models.scan_layout``)."""
        match = re.fullmatch(rf"({'|'.join(LEVELS)})_(\d+)", path[0]) if self.scan_layers and path else None
        if match is None:
            return path, ()
        level, i = match.group(1), int(match.group(2))
        peel = int(level == self.peeled_level())
        if i < peel:
            return path, ()
        return (level, *path[1:]), (i - peel,)

    def _level(self, level: str, x, carry, norm: NormSpec):
        depth, dim, heads = self._level_geometry(level)
        policy = stacking.remat_policy_name(self.remat_policy, self.use_checkpoint)
        attention = self.attention(level, dim, heads)
        block = functools.partial(stacking.remat(TransformerBlock, policy, self.scan_layers), dim, norm.branch,
                                  attention, self.ffn_expansion_factor, self.bias, self.dtype)
        if not self.scan_layers:
            for i in range(depth):
                x, carry = block(name=f"{level}_{i}")(x, carry)
            return x, carry
        if attention is not None:
            carry = self.prepare_carry(carry, dim)
        start = int(level == self.peeled_level())
        if start:
            x, carry = block(name=f"{level}_0")(x, carry)
        if depth > start:
            x, carry = stacking.scan(block(name=level), (x, carry), length=depth - start,
                                     call=lambda m, c, _: m(*c))
        return x, carry

    def _validate(self, x):
        if x.ndim != 4 or x.shape[-1] != self.inp_channels:
            raise ValueError(f"Expected an NHWC batch (B, H, W, {self.inp_channels}); got shape {x.shape}")

    def _unet(self, x, *, train: bool, carry=None):
        """The whole forward on an NHWC batch -> (output, carry)."""
        with conv_impl_scope(self.conv_impl):  # every conv of this forward, scanned or rematerialised
            return self._forward(x, train, carry)

    def _forward(self, x, train: bool, carry):
        self._validate(x)
        norm = make_norm(self.norm_name(), train=train, axis_name=self.bn_axis_name, eps=self.norm_eps)
        h, w = x.shape[1:3]
        dtype = self.dtype or jnp.float32
        inp = pad_to_multiple(x.astype(dtype), self.input_multiple, self.padding)
        conv_kw = dict(use_bias=self.bias, dtype=self.dtype)

        emb = OverlapPatchEmbed(self.dim, self.dtype, name="patch_embed")(inp)
        enc1, carry = self._level("encoder_level1", emb, carry, norm)
        enc2, carry = self._level("encoder_level2", Downsample(self.dtype, name="down1_2")(enc1), carry, norm)
        enc3, carry = self._level("encoder_level3", Downsample(self.dtype, name="down2_3")(enc2), carry, norm)
        lat, carry = self._level("latent", Downsample(self.dtype, name="down3_4")(enc3), carry, norm)

        y = jnp.concatenate([Upsample(self.dtype, name="up4_3")(lat), enc3], axis=-1)
        y = conv(4 * self.dim, 1, name="reduce_chan_level3", **conv_kw)(y)
        y, carry = self._level("decoder_level3", y, carry, norm)
        y = jnp.concatenate([Upsample(self.dtype, name="up3_2")(y), enc2], axis=-1)
        y = conv(2 * self.dim, 1, name="reduce_chan_level2", **conv_kw)(y)
        y, carry = self._level("decoder_level2", y, carry, norm)
        y = jnp.concatenate([Upsample(self.dtype, name="up2_1")(y), enc1], axis=-1)
        y, carry = self._level("decoder_level1", y, carry, norm)
        y, carry = self._level("refinement", y, carry, norm)

        if self.dual_pixel_task:
            y = y + conv(2 * self.dim, 1, name="skip_conv", **conv_kw)(emb)
            out = conv(self.out_channels, 3, name="output", **conv_kw)(y)
        else:
            if self.out_channels != self.inp_channels:
                raise ValueError("The global residual needs out_channels == inp_channels "
                                 f"(got {self.out_channels} and {self.inp_channels})")
            out = conv(self.out_channels, 3, name="output", **conv_kw)(y) + inp
        return out[:, :h, :w], carry

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        return self._unet(x, train=train)[0]

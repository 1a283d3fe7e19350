"""The shell shared by SwinIR, HAT and DRCT: everything but the residual groups.

conv_first -> [patch-embed norm -> residual groups -> final norm] -> conv_after_body (+ skip)
-> upsampler, with the official mean / img_range (and i-LN's std) input normalisation and the
official padding to a multiple of the window. Subclasses define only :meth:`residual_group`.
Feature maps stay NHWC throughout; a token view is never needed because every norm reduces
over the right axes of an NHWC map.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from iln_jax.layers.basic import conv, leaky_relu, pixel_shuffle, trunc_normal_init
from iln_jax.layers.conv import conv_impl_scope
from iln_jax.layers.norm_registry import NormSpec, make_norm
from iln_jax.layers.norms import ILN_RGB_STD, ModuleDef
from iln_jax.layers.padding import pad_to_multiple
from iln_jax.models import stacking

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean used by every official SR transformer
UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")
NUM_FEAT = 64  # fixed width of the official upsampling heads


def residual_conv(x, kind: str, dim: int, name: str):
    """The conv closing a residual group / the body: '1conv', '3conv' (keys .0/.2/.4) or 'identity'."""
    if kind == "1conv":
        return conv(dim, 3, name=name)(x)
    if kind == "3conv":
        x = leaky_relu(conv(dim // 4, 3, name=f"{name}_0")(x), 0.2)
        x = leaky_relu(conv(dim // 4, 1, name=f"{name}_2")(x), 0.2)
        return conv(dim, 3, name=f"{name}_4")(x)
    if kind == "identity":
        return x
    raise ValueError(f"Unknown resi_connection {kind!r}; valid: '1conv', '3conv', 'identity'")


def pixelshuffle_upsample(x, scale: int, num_feat: int):
    """Official ``Upsample``: (conv ×4 + shuffle 2) per factor 2, or conv ×9 + shuffle 3."""
    if scale & (scale - 1) == 0:
        for i in range(int(math.log2(scale))):
            x = pixel_shuffle(conv(4 * num_feat, 3, name=f"upsample_{2 * i}")(x), 2)
        return x
    if scale == 3:
        return pixel_shuffle(conv(9 * num_feat, 3, name="upsample_0")(x), 3)
    raise ValueError(f"upscale {scale} is not supported: use a power of 2 or 3")


class PatchEmbed(nn.Module):
    """Holds the patch-embedding norm (the official PatchEmbed has no conv when patch_size=1)."""

    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        return self.norm(name="norm")(x)[0]


def drop_path_rates(depths: Sequence[int], rate: float) -> list[list[float]]:
    """Stochastic-depth rate per block, linear over all blocks, split by group (as SwinIR)."""
    rates = np.linspace(0, rate, sum(depths)).tolist()
    bounds = np.cumsum([0, *depths])
    return [rates[bounds[i]:bounds[i + 1]] for i in range(len(depths))]


class SRTransformer(nn.Module):
    """Base module; field names and defaults are the official SwinIR constructor's."""

    img_size: int = 64
    patch_size: int = 1
    in_chans: int = 3
    embed_dim: int = 96
    depths: Sequence[int] = (6, 6, 6, 6)
    num_heads: Sequence[int] = (6, 6, 6, 6)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    ape: bool = False
    patch_norm: bool = True
    use_checkpoint: bool = False
    upscale: int = 2
    img_range: float = 1.0
    upsampler: str = ""
    resi_connection: str = "1conv"
    # iln_jax additions
    norm: str = "layernorm"
    norm_eps: Optional[float] = None
    stdnorm: bool = False
    padding: str = "reflect"
    bn_axis_name: Optional[str] = None
    dtype: Any = None  # computation dtype (None: float32); parameters stay float32
    attention_impl: str = "xla"  # iln_jax.layers.attention.ATTENTION_IMPLS
    conv_impl: str = "auto"  # iln_jax.layers.conv.CONV_IMPLS (ILN_JAX_CONV overrides it)
    scan_layers: bool = False  # scan the repeated blocks and identical groups (iln_jax.models.stacking)
    remat_policy: str = "none"  # iln_jax.models.REMAT_POLICIES; use_checkpoint=True means "block"

    # -- to be provided by each backbone -------------------------------------------------------
    def residual_group(self, index: int, norm: NormSpec, deterministic: bool, name: str) -> nn.Module:
        """Group ``index``: a module ``(x, drop_path_rates) -> x``. Scanned groups share the
        definition of group 0, so it may only depend on ``index`` through what
        :meth:`groups_are_identical` compares."""
        raise NotImplementedError("SRTransformer subclasses define residual_group")

    def groups_are_identical(self) -> bool:
        """Whether every residual group has the same structure (then they are scanned as one)."""
        return len(set(self.depths)) == 1 and len(set(self.num_heads)) == 1

    def block_scan_path(self, path: tuple[str, ...], group: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Inside a group: unrolled variable path -> (scanned path, stacked index)."""
        return path, ()

    # -------------------------------------------------------------------------------------------
    @property
    def effective_remat(self) -> str:
        return stacking.remat_policy_name(self.remat_policy, self.use_checkpoint)

    @property
    def scans_groups(self) -> bool:
        return self.scan_layers and len(self.depths) > 1 and self.groups_are_identical()

    def block(self, block_cls: type, **fields):
        """A block factory with this model's remat policy applied."""
        return functools.partial(stacking.remat(block_cls, self.effective_remat, self.scan_layers), **fields)

    def scan_path(self, path: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Where the variable at unrolled ``path`` lives with ``scan_layers``, and its index along
        the stacked axes (``iln_jax.models.scan_layout``)."""
        match = re.fullmatch(r"layers_(\d+)", path[0]) if self.scan_layers and path else None
        if match is None:
            return path, ()
        group = int(match.group(1))
        rest, index = self.block_scan_path(path[1:], group)
        if self.scans_groups:
            return ("layers", *rest), (group, *index)
        return (path[0], *rest), index

    # -------------------------------------------------------------------------------------------
    def _validate(self, x):
        if self.patch_size != 1:
            raise ValueError(f"patch_size={self.patch_size}: the official models only work with 1")
        if self.upsampler not in UPSAMPLERS:
            raise ValueError(f"Unknown upsampler {self.upsampler!r}; valid: {UPSAMPLERS}")
        if x.ndim != 4:
            raise ValueError(f"Expected an NHWC batch (B, H, W, {self.in_chans}); got shape {x.shape}")
        if x.shape[-1] != self.in_chans:
            raise ValueError(f"Expected {self.in_chans} input channels (NHWC, last axis); got shape {x.shape}")

    def _mean_std(self):
        mean = RGB_MEAN if self.in_chans == 3 else (0.0,) * self.in_chans
        std = ILN_RGB_STD[: self.in_chans] if self.stdnorm else (1.0,) * self.in_chans
        return np.asarray(mean, np.float32), np.asarray(std, np.float32)

    @property
    def scale(self) -> int:
        return 1 if self.upsampler == "" else self.upscale

    @property
    def input_multiple(self) -> int:
        """The model pads its input to a multiple of this (its window)."""
        return self.window_size

    def _features(self, x, norm: NormSpec, deterministic: bool):
        if self.patch_norm:
            x = PatchEmbed(norm.outer, name="patch_embed")(x)
        if self.ape:
            b, h, w, c = x.shape
            pos = self.param("absolute_pos_embed", trunc_normal_init, (1, self.img_size ** 2, c))
            if h * w != self.img_size ** 2:
                raise ValueError(f"ape=True needs inputs of img_size={self.img_size} after padding; got {h}x{w}")
            x = x + pos.reshape(1, h, w, c).astype(x.dtype)
        x = nn.Dropout(self.drop_rate, deterministic=deterministic)(x)
        rates = drop_path_rates(self.depths, self.drop_path_rate)
        if self.scans_groups:
            stacked = None if not any(map(any, rates)) else jnp.asarray(rates, jnp.float32)
            group = self.residual_group(0, norm, deterministic, name="layers")
            x = stacking.scan(group, x, stacked, length=len(self.depths))
        else:
            for i, group_rates in enumerate(rates):
                group = self.residual_group(i, norm, deterministic, name=f"layers_{i}")
                x = group(x, stacking.as_rates(group_rates, self.scan_layers))
        return norm.outer(name="norm")(x)[0]

    def _reconstruct(self, body, x_in):
        if self.upsampler == "pixelshuffle":
            y = leaky_relu(conv(NUM_FEAT, 3, name="conv_before_upsample_0")(body), 0.01)
            y = pixelshuffle_upsample(y, self.upscale, NUM_FEAT)
            return conv(self.in_chans, 3, name="conv_last")(y)
        if self.upsampler == "pixelshuffledirect":
            y = conv(self.upscale ** 2 * self.in_chans, 3, name="upsample_0")(body)
            return pixel_shuffle(y, self.upscale)
        if self.upsampler == "nearest+conv":
            if self.upscale not in (2, 4):
                raise ValueError(f"upsampler 'nearest+conv' supports upscale 2 or 4, got {self.upscale}")
            y = leaky_relu(conv(NUM_FEAT, 3, name="conv_before_upsample_0")(body), 0.01)
            for i in range(1, int(math.log2(self.upscale)) + 1):
                y = jnp.repeat(jnp.repeat(y, 2, axis=1), 2, axis=2)
                y = leaky_relu(conv(NUM_FEAT, 3, name=f"conv_up{i}")(y), 0.2)
            y = leaky_relu(conv(NUM_FEAT, 3, name="conv_hr")(y), 0.2)
            return conv(self.in_chans, 3, name="conv_last")(y)
        # '' (denoising / JPEG): global residual on the normalised input
        return x_in + conv(self.in_chans, 3, name="conv_last")(body)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        with conv_impl_scope(self.conv_impl):  # every conv of this forward, scanned or rematerialised
            return self._forward(x, train)

    def _forward(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        self._validate(x)
        norm = make_norm(self.norm, train=train, axis_name=self.bn_axis_name, eps=self.norm_eps)
        h, w = x.shape[1:3]
        dtype = self.dtype or jnp.float32
        # numpy float32 constants are not weakly typed: left as they are, they would promote
        # fp16/bf16 features back to float32 for the whole network.
        mean, std = self._mean_std()
        x = pad_to_multiple(x.astype(dtype), self.input_multiple, self.padding)
        x = (x - jnp.asarray(mean, dtype)) * jnp.asarray(self.img_range / std, dtype)
        first = conv(self.embed_dim, 3, name="conv_first")(x)
        body = self._features(first, norm, deterministic=not train)
        body = residual_conv(body, self.resi_connection, self.embed_dim, "conv_after_body") + first
        out = self._reconstruct(body, x)
        out = out * jnp.asarray(std / self.img_range, dtype) + jnp.asarray(mean, dtype)
        return out[:, : h * self.scale, : w * self.scale]

"""Constructor arguments checked when a model is created, before anything is traced.

A bad value otherwise surfaces deep inside ``init`` as a reshape or convolution error. Each
check raises :class:`ConfigError` naming the argument, its value and what is expected, e.g.
``swinir: num_heads[0]=3 does not divide embed_dim=8 (each head gets embed_dim / num_heads channels)``.
Checks that need the input (shapes, channels) stay in the models' ``_validate``.
"""
from __future__ import annotations

import math
from typing import Sequence

from iln_jax.errors import ConfigError
from iln_jax.layers.attention import ATTENTION_IMPLS
from iln_jax.layers.conv import CONV_IMPLS
from iln_jax.layers.norm_registry import resolve_norm
from iln_jax.layers.padding import PADDINGS
from iln_jax.models.drct import rdg_block_geometry
from iln_jax.models.sr_shell import UPSAMPLERS
from iln_jax.models.stacking import REMAT_POLICIES
from iln_jax.models.unet_shell import LEVEL_ROW, LEVEL_WIDTH


def check_model(arch: str, module) -> None:
    """Raise :class:`ConfigError` for the first constructor argument ``module`` cannot be built with."""
    resolve_norm(module.norm)  # the live registry, import paths and NormSpecs
    if module.padding not in PADDINGS:
        _fail(arch, f"Unknown padding {module.padding!r}; valid: {', '.join(PADDINGS)}")
    if module.conv_impl not in CONV_IMPLS:
        _fail(arch, f"Unknown conv_impl {module.conv_impl!r}; valid: {', '.join(CONV_IMPLS)}")
    if hasattr(module, "embed_dim"):
        _check_sr_transformer(arch, module)
    elif hasattr(module, "num_blocks"):
        _check_unet(arch, module)
    policy = getattr(module, "remat_policy", None)
    if policy is not None and policy not in REMAT_POLICIES:
        _fail(arch, f"Unknown remat_policy {policy!r}; valid: {', '.join(REMAT_POLICIES)}")


def _fail(arch: str, text: str) -> None:
    raise ConfigError(f"{arch}: {text}")


def _positive(arch: str, module, *names: str) -> None:
    for name in names:
        value = getattr(module, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            _fail(arch, f"{name}={value!r} must be a positive number")


def _per_group(arch: str, module, names: Sequence[str]) -> int:
    lengths = {name: len(getattr(module, name)) for name in names}
    if len(set(lengths.values())) != 1:
        _fail(arch, " and ".join(f"{n} (length {k})" for n, k in lengths.items()) + " need one entry per group")
    return next(iter(lengths.values()))


def _check_sr_transformer(arch: str, m) -> None:
    _positive(arch, m, "embed_dim", "window_size", "img_size", "in_chans", "mlp_ratio")
    groups = _per_group(arch, m, ("depths", "num_heads"))
    if groups == 0:
        _fail(arch, "depths is empty: the model needs at least one residual group")
    for i, (depth, heads) in enumerate(zip(m.depths, m.num_heads)):
        if int(depth) < 1 or int(heads) < 1:
            _fail(arch, f"depths[{i}]={depth} and num_heads[{i}]={heads} must be >= 1")
        if arch != "drct" and m.embed_dim % heads:
            _fail(arch, f"num_heads[{i}]={heads} does not divide embed_dim={m.embed_dim} "
                        f"(each head gets embed_dim / num_heads channels)")
    impl = getattr(m, "attention_impl", None)
    if impl is not None and impl not in ATTENTION_IMPLS:
        _fail(arch, f"Unknown attention_impl {impl!r}; valid: {', '.join(ATTENTION_IMPLS)}")
    if m.upsampler not in UPSAMPLERS:
        _fail(arch, f"Unknown upsampler {m.upsampler!r}; valid: {', '.join(repr(u) for u in UPSAMPLERS)}")
    if m.upsampler:
        scale = int(m.upscale)
        if m.upsampler == "nearest+conv" and scale not in (2, 4):
            _fail(arch, f"upsampler 'nearest+conv' supports upscale 2 or 4, got {m.upscale}")
        if m.upsampler == "pixelshuffle" and not (scale == 3 or scale >= 2 and scale & (scale - 1) == 0):
            _fail(arch, f"upscale={m.upscale} with upsampler 'pixelshuffle': use a power of 2 or 3")
        if scale < 1:
            _fail(arch, f"upscale={m.upscale} must be >= 1")
    if hasattr(m, "compress_ratio") and arch == "hat":
        _positive(arch, m, "compress_ratio", "squeeze_factor")
        if m.embed_dim // m.compress_ratio < 1 or m.embed_dim // m.squeeze_factor < 1:
            _fail(arch, f"embed_dim={m.embed_dim} is too small for compress_ratio={m.compress_ratio} / "
                        f"squeeze_factor={m.squeeze_factor} (the channel-attention convs would have no channels)")
    if arch == "drct":
        _positive(arch, m, "gc")
        for heads in dict.fromkeys(m.num_heads):
            for k in range(1, 6):
                try:
                    rdg_block_geometry(k, m.embed_dim, heads, m.gc, m.window_size, m.img_size, m.mlp_ratio)
                except ValueError as e:
                    _fail(arch, str(e))


def _check_unet(arch: str, m) -> None:
    _positive(arch, m, "dim", "inp_channels", "out_channels", "ffn_expansion_factor")
    for name in ("num_blocks", "heads"):
        if len(getattr(m, name)) != 4:
            _fail(arch, f"{name}={tuple(getattr(m, name))} needs 4 entries (one per level)")
    if any(int(h) < 1 for h in m.heads) or any(int(n) < 0 for n in m.num_blocks):
        _fail(arch, f"heads={tuple(m.heads)} must be >= 1 and num_blocks={tuple(m.num_blocks)} >= 0")
    if arch == "restormer":
        for level, row in LEVEL_ROW.items():
            width, heads = m.dim * LEVEL_WIDTH[level], m.heads[row]
            if width % heads:
                _fail(arch, f"heads[{row}]={heads} does not divide the {level} width {width} "
                            f"(dim={m.dim} x {LEVEL_WIDTH[level]})")
    tokens = getattr(m, "global_tokens", 0)
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        _fail(arch, f"global_tokens={tokens!r} must be an integer >= 0")
    if tokens and arch == "hint":
        widths = sorted({m.dim * LEVEL_WIDTH[level] for level in LEVEL_WIDTH if not level.startswith("encoder")})
        if any((w // 8) % tokens for w in widths):
            _fail(arch, f"global_tokens={tokens} must divide every HMHA channel group: the smallest attention "
                        f"width is {widths[0]} (dim={m.dim}), groups of 1:2:2:3 x {widths[0] // 8} channels")
    if not math.isfinite(float(m.ffn_expansion_factor)):
        _fail(arch, f"ffn_expansion_factor={m.ffn_expansion_factor!r} must be finite")

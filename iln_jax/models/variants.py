"""Named model sizes, as the official constructor arguments of their published configs.

    models.create(variant_arch("hat-mini"), norm="iln", **variant_kwargs("hat-mini", upscale=2))

SR variants default to ``upscale=4`` (the scale parameter counts are quoted at); override it for
x2/x3, which changes only the upsampling head. Sources: HAT/DRCT ``options/test/*.yml``
(HAT-S, HAT, HAT-L, DRCT, DRCT-L), the i-LN repo's ``HAT-mini`` yml (its "HAT-dagger" is ``hat``),
SwinIR's ``main_test_swinir.define_model`` (classical_sr s64w8, lightweight_sr, real_sr
medium/large, color_dn, color_jpeg_car; pass ``in_chans=1`` for the grayscale dn/car models).
The official i-LN configs also set ``stdnorm=True`` (the converter's ``hat_iln`` does so by default).
"""
from __future__ import annotations

from iln_jax.errors import ConfigError

_SR = dict(in_chans=3, img_size=64, img_range=1.0, mlp_ratio=2, upsampler="pixelshuffle",
           resi_connection="1conv", upscale=4)
_HAT = dict(_SR, window_size=16, conv_scale=0.01, overlap_ratio=0.5, depths=(6,) * 6, num_heads=(6,) * 6)
_SWINIR = dict(_SR, window_size=8, depths=(6,) * 6, embed_dim=180, num_heads=(6,) * 6)
_SWINIR_RESTORE = dict(_SWINIR, upscale=1, upsampler="")

# name -> (arch, official kwargs); parameter counts (x4 where SR) are checked in the tests.
VARIANTS: dict[str, tuple[str, dict]] = {
    "hat-s": ("hat", dict(_HAT, embed_dim=144, compress_ratio=24, squeeze_factor=24)),
    "hat": ("hat", dict(_HAT, embed_dim=180, compress_ratio=3, squeeze_factor=30)),
    "hat-l": ("hat", dict(_HAT, embed_dim=180, compress_ratio=3, squeeze_factor=30, depths=(6,) * 12,
                          num_heads=(6,) * 12)),
    "hat-mini": ("hat", dict(_HAT, embed_dim=96, compress_ratio=24, squeeze_factor=24)),
    "drct": ("drct", dict(_HAT, embed_dim=180, compress_ratio=3, squeeze_factor=30)),
    "drct-l": ("drct", dict(_HAT, embed_dim=180, compress_ratio=3, squeeze_factor=30, depths=(6,) * 12,
                            num_heads=(6,) * 12)),
    "swinir-classical": ("swinir", _SWINIR),
    "swinir-lightweight": ("swinir", dict(_SWINIR, embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4,
                                          upsampler="pixelshuffledirect")),
    "swinir-realsr-m": ("swinir", dict(_SWINIR, upsampler="nearest+conv")),
    "swinir-realsr-l": ("swinir", dict(_SWINIR, embed_dim=240, depths=(6,) * 9, num_heads=(8,) * 9,
                                       upsampler="nearest+conv", resi_connection="3conv")),
    "swinir-dn": ("swinir", dict(_SWINIR_RESTORE, img_size=128)),
    "swinir-car": ("swinir", dict(_SWINIR_RESTORE, img_size=126, window_size=7, img_range=255.0)),
}


def _lookup(name: str) -> tuple[str, dict]:
    if name not in VARIANTS:
        raise ConfigError(f"Unknown variant {name!r}; valid variants: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def variant_arch(name: str) -> str:
    """The arch (``models.create`` / ``convert`` name) a variant belongs to."""
    return _lookup(name)[0]


def variant_kwargs(name: str, **overrides) -> dict:
    """A copy of the variant's official kwargs, with ``overrides`` applied on top."""
    return {**_lookup(name)[1], **overrides}

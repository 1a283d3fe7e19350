"""Blind Gaussian colour denoising (DFWB, sigma ~ U[0, 50] -> CBSD68 sigma 25, RGB PSNR) with the
Restormer recipe (mixup on, as the official denoising yml).

NOTE (lead): field names must be reconciled with train.py's config schema; see
configs/restormer_common.py for the layout.

    python train.py --config configs/restormer_denoise.py                  # Restormer, BiasFree LN
    python train.py --config configs/restormer_denoise.py:norm=iln
    python train.py --config configs/restormer_denoise.py:arch=hint        # WithBias LN, FFT 0.1
    python train.py --config configs/restormer_denoise.py:tiny=1           # CPU smoke run

Restormer's official denoising model uses ``LayerNorm_type='BiasFree'``; with ``norm=layernorm``
that is Restormer's bias-free LN, with any other norm the keyword is ignored. HINT's official
denoising yml keeps WithBias.
"""
from configs import restormer_common


def get_config(arg: str | None = None):
    return restormer_common.get_config("dn", arg)

"""Deraining (Rain13K -> Rain100L, Y-channel PSNR/SSIM) with the Restormer recipe.

NOTE (lead): field names must be reconciled with train.py's config schema; see
configs/restormer_common.py for the layout.

    python train.py --config configs/restormer_derain.py                          # Restormer, LN
    python train.py --config configs/restormer_derain.py:norm=iln
    python train.py --config configs/restormer_derain.py:arch=hint,norm=iln       # + FFT loss 0.1
    python train.py --config configs/restormer_derain.py:exda=small,norm=iln      # ExDA-Small
    python train.py --config configs/restormer_derain.py:tiny=1                   # CPU smoke run

HINT's released deraining model was trained on Rain100L (point ``data.root`` there to match it);
this config trains every backbone on Rain13K, as Restormer.
"""
from configs import restormer_common


def get_config(arg: str | None = None):
    return restormer_common.get_config("dr", arg)

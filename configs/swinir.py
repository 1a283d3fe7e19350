"""SwinIR (the paper's SwinIR row) x {every norm} x {SR x2/x4, DN s15/25, CAR q10/40, deraining}.

    python train.py --config configs/swinir.py:task=sr,scale=2,norm=iln
    python train.py --config configs/swinir.py:task=dn,sigma=25,norm=layernorm
    python train.py --config configs/swinir.py:task=car,quality=40,norm=iln
    python train.py --config configs/swinir.py:task=sr,scale=2,norm=iln,tiny=1   # CPU smoke run

Constructor arguments are the official ones per task (``iln_jax.models.variant_kwargs``):
SwinIR-M classical SR (E 180, 6x6 blocks, 6 heads, mlp 2, window 8, pixelshuffle); color DN
(``upsampler=''``, img_size 128) also for deraining; CAR window 7, img_range 255, img_size 126
(with 126-pixel patches so that they tile the window). Recipe: configs/common.py.
"""
from configs import common

VARIANT_BY_TASK = {"sr": "swinir-classical", "dn": "swinir-dn", "car": "swinir-car", "dr": "swinir-dn"}


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, task="sr", scale=2, sigma=15, quality=10, norm="iln", tiny=False)
    common.check_task(a.task)  # before the lookup, for its message
    return common.backbone_config(VARIANT_BY_TASK[a.task], a, car_patch=126)

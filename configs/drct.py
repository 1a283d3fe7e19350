"""DRCT (Hsu et al., 2024) x {every norm} x {SR x2/x4, DN s15/25, CAR q10/40, deraining}.

    python train.py --config configs/drct.py:task=sr,scale=2,norm=iln
    python train.py --config configs/drct.py:task=sr,norm=iln,tiny=1           # CPU smoke run

``variant``: ``drct`` (E 180, 6 RDGs, 14.1M params) or ``drct-l`` (12 RDGs); window 16, 6 heads,
mlp 2, gc 32 (``iln_jax.models.variant_kwargs``). Tasks without an upsampler use
``upsampler=''``. Recipe: configs/common.py.
"""
from configs import common

VARIANTS = ("drct", "drct-l")


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="drct", task="sr", scale=2, sigma=15, quality=10, norm="iln",
                         tiny=False)
    common.check_choice(a.variant, VARIANTS, "DRCT variant")
    return common.backbone_config(a.variant, a)

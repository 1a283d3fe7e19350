"""HAT (Chen et al., 2023) x {every norm} x {SR x2/x4, DN s15/25, CAR q10/40, deraining}.

    python train.py --config configs/hat.py:task=sr,scale=4,norm=iln
    python train.py --config configs/hat.py:variant=hat-mini,task=dn,sigma=25,norm=layernorm
    python train.py --config configs/hat.py:task=sr,norm=iln,tiny=1            # CPU smoke run

``variant``: ``hat`` (E 180, compress/squeeze 3/30), ``hat-mini`` (the i-LN paper's HAT-mini:
E 96, 24/24), ``hat-s`` (E 144, 24/24), ``hat-l`` (12 groups); all 6 heads, window 16, overlap
0.5, conv_scale 0.01, mlp 2 (``iln_jax.models.variant_kwargs``). Tasks without an upsampler use
the shared shell's ``upsampler=''`` (global residual, as SwinIR's DN/CAR models). Recipe:
configs/common.py; the official i-LN HAT-mini recipe is configs/hat_mini_iln.py.
"""
from configs import common

VARIANTS = ("hat", "hat-mini", "hat-s", "hat-l")


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, variant="hat", task="sr", scale=2, sigma=15, quality=10, norm="iln",
                         tiny=False)
    common.check_choice(a.variant, VARIANTS, "HAT variant")
    return common.backbone_config(a.variant, a)

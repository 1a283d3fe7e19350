"""The official i-LN HAT-mini recipe (2minkyulee/i-LN ``options/train/HAT-mini/SRx{2,4}_HAT-mini_*.yml``).

    python train.py --config configs/hat_mini_iln.py:scale=2                  # HAT-mini + i-LN, x2
    python train.py --config configs/hat_mini_iln.py:scale=4,norm=layernorm   # the baseline yml

HAT-mini (E 96, 6x6, heads 6, window 16, compress/squeeze 24/24, mlp 2, conv_scale 0.01,
overlap 0.5, pixelshuffle, img_size 64), i-LN with ``stdnorm`` (baseline: LayerNorm without),
gt_size 64 (x2) / 128 (x4) = LR patch 32, batch 16 on one device, Adam 2e-4 (0.9, 0.99),
MultiStepLR [250k, 400k, 450k, 475k] x0.5, 300k iterations, L1, EMA 0.999, seed 1; validation on
Y with crop_border = scale every 20k iterations, checkpoints every 20k.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, scale=2, norm="iln", tiny=False)
    a = ml_collections.ConfigDict({**a.to_dict(), "task": "sr", "sigma": 15, "quality": 10})
    c = common.backbone_config("hat-mini", a)
    common.follow_norm(c, lambda norm: f"hat-mini_srx{a.scale}_{norm}_official" + ("_tiny" if a.tiny else ""),
                       stdnorm=True)
    if not a.tiny:
        c.train.checkpoint_every = 20_000
    return c

"""The main job: ``python train.py`` with no arguments.

A small SwinIR with i-LN learns x2 super-resolution on the embedded photos (no download), is
validated against MATLAB bicubic on held-out photos (Y channel, crop 2), and writes checkpoints,
logs and restored images under ``runs/default`` (the README says how long it takes).
"""
from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, scale=2, norm="iln", tiny=False)
    c = common.base_config()
    c.model.arch = "swinir"
    c.model.norm = a.norm
    c.model.kwargs = common.full_model_kwargs("swinir", dict(
        img_size=32, window_size=8, embed_dim=32, depths=(4,), num_heads=(4,), mlp_ratio=2.0,
        upscale=a.scale, img_range=1.0, upsampler="pixelshuffledirect", resi_connection="1conv",
        in_chans=3))
    # runs/default for i-LN (the main job), runs/default_<norm> for the others
    common.follow_norm(c, lambda norm: ("default" if norm == "iln" else f"default_{norm}") + ("_tiny" if a.tiny else ""),
                       stdnorm=True)
    common.apply_task(c, "sr", scale=a.scale)
    c.data.patch_size = 32
    c.data.batch_size = 8
    c.optim.lr = 1e-3
    c.optim.milestones = (400, 520)
    c.optim.ema_decay = 0.99
    c.train.num_steps = 600
    c.train.log_every = 50
    c.train.checkpoint_every = 200
    c.train.diagnostics_every = 50
    c.eval.every = 300
    c.eval.weights = "both"
    if a.tiny:
        common.apply_tiny(c)
        common.tiny_transformer_kwargs(c.model.kwargs, "swinir")
    return c

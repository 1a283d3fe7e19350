"""The Restormer recipe shared by configs/restormer_derain.py and configs/restormer_denoise.py,
for Restormer, HINT and the ExDA sizes, with every norm.

Beyond configs/common.py's fields, two blocks: ``progressive`` (run by iln_jax/train/phases.py)
and ``mixing`` (Restormer's mixup, applied in the train step).

Layout of the returned ConfigDict (beyond configs/common.py's base_config):
  model.arch / model.norm / model.kwargs   "restormer" or "hint"; any norm of the grid; every
                                           constructor argument (official ones + iln_jax's).
  optim   AdamW lr 3e-4, wd 1e-4, betas (0.9, 0.999); CosineAnnealingRestartCyclicLR: periods
          [92k, 208k] with eta_mins [3e-4, 1e-6] (constant 3e-4 for 92k, then cosine to 1e-6);
          global-norm gradient clip 0.01; no EMA (the official default).
  loss    L1 (+ 0.1 x L1 of the FFT for HINT, as its official ymls).
  progressive   gt_sizes / batch_sizes (global) / iters per phase. The official runs use 8 GPUs;
                ``mini_batch_sizes_per_gpu`` are the yml values, ``batch_sizes`` = 8 x those.
                Each phase recompiles the train step once for its patch shape.
  mixing  mixup (beta 1.2, use_identity) - the official denoising recipe only.
  data    task 'dr' (Rain13K, eval Rain100L, Y-channel PSNR) or 'dn' (DFWB, blind sigma in
          [0, 50], eval CBSD68 sigma 25, RGB PSNR); patch_size/batch_size are phase 1's.
  seed 100, 300k steps.

``arg`` keys: arch (restormer | hint), norm, exda (none | tiny | small | full: Restormer with the
ExDA primitives at that size), tiny (a CPU-sized model and run for tests).
HINT with ExDA's primitives: ``--config.model.kwargs.value_transform=residual`` and
``--config.model.kwargs.global_tokens=K`` (K tokens per HMHA channel group; K must divide dim / 4).
"""
from __future__ import annotations

import ml_collections

from configs import common
from iln_jax.models.restormer import EXDA_SIZES

ARCHS = ("restormer", "hint")
EXDA = ("none", *EXDA_SIZES)
NUM_GPUS = 8  # the official runs; batch sizes below are global (8 x the per-GPU yml values)

# Official network_g of the ymls (Restormer's Gaussian denoising uses the BiasFree LayerNorm).
RESTORMER = dict(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4, heads=(1, 2, 4, 8),
                 ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias", dual_pixel_task=False)
HINT = dict(RESTORMER, heads=(8, 8, 8, 8))

# Progressive patches of the official ymls: (gt_sizes, per-GPU mini-batch sizes, iters).
RESTORMER_PHASES = ((128, 160, 192, 256, 320, 384), (8, 5, 4, 2, 1, 1),
                    (92_000, 64_000, 48_000, 36_000, 36_000, 24_000))
HINT_PHASES = {"dr": ((128, 160, 192, 256), (6, 4, 3, 1), (92_000, 64_000, 48_000, 96_000)),
               "dn": ((128, 160, 192, 256, 320, 384), (6, 4, 3, 1, 1, 1),
                      (92_000, 64_000, 48_000, 36_000, 36_000, 24_000))}
TINY_PHASES = ((16, 24, 32), (16, 8, 8), (2, 2, 2))
TINY_MODEL = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)


def model_kwargs(arch: str, task: str, exda: str) -> dict:
    if arch == "hint":
        if exda != "none":
            raise ValueError("The ExDA sizes are Restormer models (arch=restormer)")
        return dict(HINT)
    kw = dict(RESTORMER) if exda == "none" else dict(EXDA_SIZES[exda])
    if task == "dn" and exda == "none":
        kw["LayerNorm_type"] = "BiasFree"
    return kw


def set_progressive(c: ml_collections.ConfigDict, phases) -> None:
    gt_sizes, per_gpu, iters = phases
    c.progressive = ml_collections.ConfigDict(dict(
        gt_sizes=tuple(gt_sizes), mini_batch_sizes_per_gpu=tuple(per_gpu), num_gpus=NUM_GPUS,
        batch_sizes=tuple(NUM_GPUS * b for b in per_gpu), iters=tuple(iters)))
    c.data.patch_size = gt_sizes[0]
    c.data.batch_size = c.progressive.batch_sizes[0]
    c.train.num_steps = sum(iters)


def get_config(task: str, arg: str | None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, arch="restormer", norm="layernorm", exda="none", tiny=False)
    common.check_choice(a.arch, ARCHS, "arch")
    common.check_choice(a.exda, EXDA, "ExDA size")
    c = common.base_config()
    c.seed = 100
    c.model.arch = a.arch
    c.model.norm = a.norm
    c.model.kwargs = common.full_model_kwargs(a.arch, model_kwargs(a.arch, task, a.exda))
    common.apply_task(c, task, sigma=25)
    if task == "dn":
        c.data.noise_sigma = (0, 50)  # blind: sigma ~ U(0, 50) per patch; evaluated at 25

    c.optim.optimizer = "adamw"
    c.optim.lr = 3e-4
    c.optim.b1, c.optim.b2 = 0.9, 0.999
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "cosine_restart"
    c.optim.periods = (92_000, 208_000)
    c.optim.restart_weights = (1.0, 1.0)
    c.optim.eta_mins = (3e-4, 1e-6)
    c.optim.grad_clip = 0.01
    c.optim.ema_decay = 0.0
    c.eval.weights = "raw"
    c.loss.pixel = "l1"
    c.loss.fft_weight = 0.1 if a.arch == "hint" else 0.0
    c.mixing = ml_collections.ConfigDict(dict(mixup=task == "dn", mixup_beta=1.2, use_identity=True))
    set_progressive(c, HINT_PHASES[task] if a.arch == "hint" else RESTORMER_PHASES)

    label = f"{a.arch if a.exda == 'none' else f'exda-{a.exda}'}_{'derain' if task == 'dr' else 'dn_blind'}"
    common.follow_norm(c, lambda norm: f"{label}_{norm}" + ("_tiny" if a.tiny else ""), stdnorm=False)
    if a.tiny:
        common.apply_tiny(c)
        c.model.kwargs.update(TINY_MODEL)
        if a.exda != "none":
            c.model.kwargs.global_tokens = 2  # divides the tiny head width (8)
        set_progressive(c, TINY_PHASES)
        c.progressive.num_gpus = 1
        c.progressive.batch_sizes = c.progressive.mini_batch_sizes_per_gpu
        c.data.batch_size = c.progressive.batch_sizes[0]
        c.optim.periods = (2, 4)
    return c

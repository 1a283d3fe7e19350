"""Shared pieces of every training config: the base ConfigDict, the ``get_config(arg)`` argument
parser, the paper's recipe, the per-task conventions and the tiny CPU variant.

A config file is selected and overridden on the command line::

    python train.py --config configs/swinir.py:task=sr,scale=4,norm=iln --config.optim.lr=1e-4

``train.py`` locks the config (``lock_config=True``), so an override of a key that does not exist
is an error; :func:`parse_arg` does the same for the ``:arg`` part.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import ml_collections
from ml_collections import config_dict

from iln_jax import data as data_lib
from iln_jax import models
from iln_jax.data.config import TASKS

# The i-LN paper's recipe (= the official HAT-mini ymls): Adam 2e-4, betas (0.9, 0.99), L1,
# 300k iterations with BasicSR's MultiStepLR milestones (the later ones lie past 300k, exactly as
# in the official ymls), EMA 0.999, batch 16, seed 1.
PAPER_STEPS = 300_000
PAPER_MILESTONES = (250_000, 400_000, 450_000, 475_000)
PAPER_BATCH = 16


class NormDependent(config_dict.FieldReference):
    """A config value computed from ``model.norm`` whenever it is read, so that the command-line
    override ``--config.model.norm=X`` moves it as the config argument ``norm=X`` does (the run's
    name, i-LN's input ``stdnorm``). Setting the value itself (``--config.name=...``) fixes it."""

    def __init__(self, norm: config_dict.FieldReference, derive: Callable[[str], object], field_type: type):
        super().__init__(derive(norm.get()), field_type=field_type)
        self._norm, self._derive, self._fixed = norm, derive, False

    def set(self, value, type_safe=True):
        super().set(value, type_safe)
        self._fixed = True

    def get(self):
        return super().get() if self._fixed else self._derive(self._norm.get())

    def __setstate__(self, state):  # FieldReference's restores only its own fields
        self.__dict__.update(state)


def norm_slug(norm: str) -> str:
    """A norm as part of a directory name (import paths hold ':' and '.')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", norm)


def is_iln(norm: str) -> bool:
    return norm == "iln"


def follow_norm(c: ml_collections.ConfigDict, name: Callable[[str], str], *, stdnorm: bool) -> None:
    """Make ``c.name`` (``name(norm slug)``) and, with ``stdnorm``, ``model.kwargs.stdnorm`` (on for
    i-LN: the official i-LN model divides its input by the DF2K RGB std; baselines do not) follow
    the effective ``model.norm``, however it was set."""
    norm = c.model.get_ref("norm")
    c.name = NormDependent(norm, lambda n: name(norm_slug(n)), str)
    if stdnorm:
        c.model.kwargs.stdnorm = NormDependent(norm, is_iln, bool)


def parse_arg(arg: str | None, **defaults):
    """Parse ``"k=v,k2=v2"`` into a ConfigDict of ``defaults`` (typed by the defaults).

    Unknown names are errors that list the valid ones.
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if key not in values:
            raise ValueError(f"Unknown config argument {key!r} in {arg!r}; valid: {', '.join(sorted(values))}")
        if not sep:
            raise ValueError(f"Config argument {key!r} needs a value ({key}=...)")
        values[key] = _typed(raw.strip(), values[key], key)
    return ml_collections.ConfigDict(values)


def _typed(raw: str, default, key: str):
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"Config argument {key}={raw!r} is not a boolean")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def base_config() -> ml_collections.ConfigDict:
    """Every field the training loop reads, with the paper's recipe as defaults."""
    c = ml_collections.ConfigDict()
    c.name = "run"
    c.seed = 1

    c.model = ml_collections.ConfigDict()
    c.model.arch = "swinir"
    c.model.norm = "iln"
    # The official PyTorch constructor's keyword arguments (passed to iln_jax.models.create).
    c.model.kwargs = ml_collections.ConfigDict()

    c.data = data_lib.default_config()
    c.data.batch_size = PAPER_BATCH

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adam"          # adam | adamw
    c.optim.lr = 2e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.schedule = "multistep"      # multistep | cosine_restart | constant
    c.optim.milestones = PAPER_MILESTONES
    c.optim.gamma = 0.5
    c.optim.periods = (92_000, 208_000)       # cosine_restart only (Restormer's)
    c.optim.restart_weights = (1.0, 1.0)
    c.optim.eta_mins = (3e-4, 1e-6)
    c.optim.warmup_steps = 0
    c.optim.grad_clip = 0.0             # global-norm clip; 0 = off
    c.optim.ema_decay = 0.999           # 0 = no EMA

    c.loss = ml_collections.ConfigDict()
    c.loss.pixel = "l1"                 # l1 | charbonnier | l2
    c.loss.charbonnier_eps = 1e-9       # KAIR's: sqrt(diff^2 + eps)
    c.loss.fft_weight = 0.0             # HINT adds 0.1 * L1 of the 2-D FFT

    c.mixing = ml_collections.ConfigDict()  # Restormer's mixup (its Gaussian denoising recipe)
    c.mixing.mixup = False
    c.mixing.mixup_beta = 1.2
    c.mixing.use_identity = True

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = PAPER_STEPS
    c.train.parallel = "mesh"           # mesh (jit over a device mesh) | pmap
    c.train.log_every = 100
    c.train.checkpoint_every = 5_000
    c.train.max_to_keep = 3
    c.train.async_checkpointing = True
    c.train.progress_bar = True
    c.train.prefetch = 2                # batches transferred to the devices ahead of their step
    c.train.compilation_cache_dir = "auto"  # auto: <workdir>/compile_cache; a path or URL; "" = off
    c.train.fast_compile = False        # CPU: compile the step with XLA backend optimizations off
    c.train.compute_dtype = "float32"   # float32 | bfloat16 (mixed precision; float32 params/optimizer)
    # The paper's diagnostics (per-block E[x^2], channel entropy, max |x|) of the raw weights on the
    # first ``diagnostics_images`` training inputs, every ``diagnostics_every`` steps and at the last
    # step, into <workdir>/diagnostics.jsonl; 0 = off.
    c.train.diagnostics_every = 1_000
    c.train.diagnostics_images = 4
    # A new run (new --workdir) that starts from another run's weights: "<workdir or its
    # checkpoints/ dir>[:step]" (default: its newest complete checkpoint). Parameters, EMA and
    # BatchNorm statistics are copied; optimizer, step, rng and data stream start fresh. Ignored
    # once the new run has checkpoints of its own (re-running resumes it). train.py --init_from.
    c.train.init_from = config_dict.placeholder(str)
    # After a SIGTERM the run saves at the next step and exits; if it is still running this many
    # seconds later (blocked I/O), it stops without saving. 0: wait for ever.
    c.train.sigterm_grace_seconds = 60.0

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 20_000               # also at the last step; 0: only there; < 0: never
    c.eval.weights = "ema"              # ema | raw | both (ema falls back to raw without EMA)
    c.eval.crop_border = -1             # -1: the task's convention (scale for SR, else 0)
    c.eval.test_y_channel = True
    c.eval.save_images = 3              # restored PNGs written per validation
    c.eval.bucket = 0                   # pad eval inputs to a multiple of this (0: exact shapes)
    return c


def apply_task(c: ml_collections.ConfigDict, task: str, *, scale: int = 2, sigma: int = 15,
               quality: int = 10) -> None:
    """Task, degradation level, patch size and metric conventions (ARCHITECTURES.md §2).

    Patches follow the paper: SR HR crops 64 (x2) / 128 (x4), i.e. LR patch 32 for both scales;
    DN / CAR / deraining 128 x 128.
    """
    check_task(task)
    c.data.task = task
    if task == "sr":
        c.data.scale = scale
        c.data.patch_size = 32
    else:
        c.data.scale = 1
        c.data.patch_size = 128
    if task == "dn":
        c.data.noise_sigma = sigma
    if task == "car":
        c.data.jpeg_quality = quality
    # SR and deraining report PSNR/SSIM on Y; color denoising and CAR on RGB.
    c.eval.test_y_channel = task in ("sr", "dr")
    c.eval.crop_border = scale if task == "sr" else 0


def task_label(task: str, scale: int, sigma: int, quality: int) -> str:
    return {"sr": f"srx{scale}", "dn": f"dn{sigma}", "car": f"car{quality}", "dr": "derain"}[task]


def apply_tiny(c: ml_collections.ConfigDict) -> None:
    """A CPU-test-sized run: a few steps of a tiny model on tiny patches, everything exercised."""
    c.data.patch_size = 8 if c.data.task == "sr" else 16
    c.data.batch_size = 8
    c.data.num_workers = 0
    c.optim.milestones = (4,)
    c.optim.periods = (4, 4)
    c.optim.warmup_steps = 0
    c.train.num_steps = 6
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.train.max_to_keep = 2
    c.train.progress_bar = False
    c.train.fast_compile = True
    c.eval.every = 6
    c.eval.save_images = 1


def tiny_transformer_kwargs(kwargs: ml_collections.ConfigDict, arch: str) -> None:
    """Shrink SwinIR/HAT/DRCT constructor arguments in place: 1 group of depth 2, E 8, window 4."""
    kwargs.embed_dim = 8
    kwargs.depths = (2,)
    kwargs.num_heads = (2,)
    kwargs.window_size = 4
    kwargs.img_size = 8
    if kwargs.upsampler == "pixelshuffle":
        kwargs.upsampler = "pixelshuffledirect"  # the official head's fixed 64-channel convs dominate otherwise
    if "compress_ratio" in kwargs:
        kwargs.compress_ratio = 2
        kwargs.squeeze_factor = 4
    if arch == "drct":
        kwargs.gc = 4


# Constructor fields that are not run settings: the norm has its own key, the parallel mode sets
# bn_axis_name, and the computation dtype is not a command-line type.
_NOT_KWARGS = ("parent", "name", "norm", "bn_axis_name", "dtype")


def full_model_kwargs(arch: str, kwargs: dict) -> ml_collections.ConfigDict:
    """Every constructor argument of ``arch`` (defaults, then ``kwargs``), so that each one can be
    overridden on the command line (``--config.model.kwargs.drop_path_rate=0``)."""
    out = ml_collections.ConfigDict()
    for f in dataclasses.fields(models.model_class(arch)):
        if f.name in _NOT_KWARGS:
            continue
        value = kwargs.get(f.name, f.default)
        out[f.name] = config_dict.placeholder(float) if value is None else value
    unknown = set(kwargs) - set(out)
    if unknown:
        raise ValueError(f"Unknown {arch} constructor argument(s) {sorted(unknown)}")
    return out


def check_choice(value, valid, what: str) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {what} {value!r}; valid: {', '.join(valid)}")


def check_task(task: str) -> None:
    check_choice(task, TASKS, "task")


def backbone_config(variant: str, a: ml_collections.ConfigDict, *,
                    car_patch: int | None = None) -> ml_collections.ConfigDict:
    """A paper-grid config: the official ``variant`` (``iln_jax.models.VARIANTS``) with norm
    ``a.norm`` on task ``a.task`` (``a.scale`` / ``a.sigma`` / ``a.quality``), tiny if ``a.tiny``."""
    c = base_config()
    c.model.arch = models.variant_arch(variant)
    c.model.norm = a.norm
    restore = dict(upscale=1, upsampler="") if a.task != "sr" else dict(upscale=a.scale)
    c.model.kwargs = full_model_kwargs(c.model.arch, models.variant_kwargs(variant, **restore))
    apply_task(c, a.task, scale=a.scale, sigma=a.sigma, quality=a.quality)
    if a.task == "car" and car_patch:
        c.data.patch_size = car_patch
    prefix = f"{c.model.arch if variant.startswith('swinir') else variant}_{task_label(a.task, a.scale, a.sigma, a.quality)}"
    follow_norm(c, lambda norm: f"{prefix}_{norm}" + ("_tiny" if a.tiny else ""), stdnorm=True)
    if a.tiny:
        apply_tiny(c)
        tiny_transformer_kwargs(c.model.kwargs, c.model.arch)
    return c

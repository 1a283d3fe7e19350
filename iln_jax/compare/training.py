"""``python -m iln_jax.compare train``: the same training run in iln_jax and in PyTorch, side by side.

    python -m iln_jax.compare train --torch-repo ~/src/SwinIR --torch-class models.network_swinir:SwinIR \\
        --arch swinir --kwargs '{"upscale": 2, "img_size": 32, "window_size": 8, "embed_dim": 32, "depths": [4],
        "num_heads": [4], "mlp_ratio": 2, "upsampler": "pixelshuffledirect"}' --steps 2000 --batch 8 --patch 32 \\
        --set optim.milestones=(1400,1800) --out runs/compare_swinir

Both frameworks start from the same weights (the official model's seeded initialisation, converted
with ``iln_jax.convert``), see the same batches in the same order (this project's pipeline for
``--config``'s data: the embedded photos by default) and follow the official recipe: L1 (mean),
Adam with the config's betas and eps, the config's learning-rate schedule, parameter EMA. JAX's step
is the one ``train.py`` runs (``iln_jax.train.make_step``); PyTorch's is BasicSR's iteration
(``torch_recipe.py``). Nothing random happens inside either step: drop-path and dropout are off,
mixing augmentation is off.

Recorded: both losses at every step; at every ``--log-every`` step the relative parameter difference
``||θ_jax − θ_torch|| / ||θ_torch||`` over the whole model and per module group (residual groups
``layers.i``, ``conv_first``, ...), and the same for the EMA; at ``--eval-every`` steps and at the
end PSNR/SSIM of both models (raw and EMA weights) on the config's validation images, next to bicubic.

**The chaos floor.** float32 training amplifies round-off: two runs that differ by one ulp in
their starting weights drift apart. A second PyTorch run from the same weights moved by one ulp
(seeded signs) measures that drift; the JAX–PyTorch divergence is judged against it (their ratio
per log step). A port that is right stays within a small factor of the floor; a module that is
wrong pulls away from it first, and the per-group ratios say which (``first_to_drift``).

Outputs: ``OUT/report.json`` (``steps``, ``loss_jax``, ``loss_torch``, ``loss_floor``, ``log_steps``,
``param_rel_diff``, ``floor_rel_diff``, ``ratio``, ``ema_rel_diff``, ``ema_floor_rel_diff``, per-group
versions, ``psnr_jax``, ``psnr_torch``, ``psnr_floor``, ``psnr_bicubic``, ``evals``, the recipe,
versions and timings) and ``OUT/report.png`` (losses overlaid; both divergences against the step,
log scale).
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import platform
import time
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from iln_jax import parity
from iln_jax.compare import divergence, official_imports, plot
from iln_jax.compare.forward import parse_json
from iln_jax.compare.jax_side import JaxTrainer
from iln_jax.compare.pair import CompareError, ModelPair, build_pair, import_object, in_channels
from iln_jax.compare.torch_recipe import TorchTrainer, copy_module, perturb_one_ulp

REPORT = "report.json"
FIGURE = "report.png"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m iln_jax.compare train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-repo", help="checkout of the official repository (put on sys.path)")
    p.add_argument("--torch-class", required=True, help="module.path:Class or file.py:Class")
    p.add_argument("--arch", help="iln_jax.convert arch name (swinir, hat, hat_iln, drct, restormer, hint)")
    p.add_argument("--flax-class", help="file.py:Class or module:Class, instead of --arch (generic mapping)")
    p.add_argument("--sequences", default="", help="with --flax-class: comma-separated container names")
    p.add_argument("--kwargs", default="{}", help="JSON constructor arguments (both models)")
    p.add_argument("--flax-kwargs", default="{}", help="JSON extra arguments for the Flax model only")
    p.add_argument("--steps", type=int, required=True, help="training steps")
    p.add_argument("--batch", type=int, help="batch size (default: the config's data.batch_size)")
    p.add_argument("--patch", type=int, help="input (LR) patch side (default: the config's data.patch_size)")
    p.add_argument("--config", default="configs/default.py",
                   help="run config for the data, the optimizer, the schedule and the EMA (its model is not used)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. optim.milestones=(1400,1800) (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="PyTorch seed of the initial weights")
    p.add_argument("--pth", help="start from these official weights instead of the seeded initialisation")
    p.add_argument("--param-key", help="state_dict entry of --pth (params / params_ema)")
    p.add_argument("--log-every", type=int, default=50, help="steps between parameter comparisons")
    p.add_argument("--eval-every", type=int, default=0, help="steps between PSNR/SSIM evaluations (0: end only)")
    p.add_argument("--no-floor", action="store_true", help="skip the one-ulp PyTorch run (no chaos floor)")
    p.add_argument("--floor-seed", type=int, default=1, help="seed of the one-ulp perturbation's signs")
    p.add_argument("--drift-factor", type=float, default=10.0,
                   help="a group 'drifts' when its JAX-PyTorch difference exceeds this many times its floor")
    p.add_argument("--precision", choices=("highest", "default"), default="highest",
                   help="float32 matmuls and convolutions at full precision in both frameworks (highest, the parity "
                        "setting of iln_jax.parity), or each framework's default (TF32 on recent GPUs)")
    p.add_argument("--out", required=True, help="output folder (report.json, report.png)")
    return p.parse_args(argv)


# --- set-up --------------------------------------------------------------------------------------

def run_config(args):
    """The config with the comparison's batch, patch and steps; refuses what the PyTorch side does
    not mirror (one line naming the key)."""
    from iln_jax.train.configs import apply_overrides, load_config, parse_overrides
    try:
        config = load_config(args.config, lock=False)
    except (OSError, ValueError) as e:
        raise CompareError(f"--config {args.config}: {e}") from None
    config.lock()
    apply_overrides(config, parse_overrides(args.set))
    config.unlock()
    if args.batch:
        config.data.batch_size = args.batch
    if args.patch:
        config.data.patch_size = args.patch
    config.train.num_steps = args.steps
    config.train.compute_dtype = "float32"
    if "mixing" in config:
        config.mixing.mixup = False  # no random augmentation inside either step
    o, loss = config.optim, config.loss
    mirrored = (("loss.pixel", loss.pixel, "l1"), ("loss.fft_weight", loss.fft_weight, 0),
                ("optim.optimizer", o.optimizer, "adam"), ("optim.weight_decay", o.weight_decay, 0),
                ("optim.grad_clip", o.grad_clip, 0))
    unsupported = [f"{key}={value!r} (needs {want!r})" for key, value, want in mirrored if value != want]
    if unsupported:
        raise CompareError("the PyTorch side runs the official recipe (L1, Adam, no clipping or weight decay); "
                           "the config has " + ", ".join(unsupported))
    if args.steps < 1 or args.log_every < 1:
        raise CompareError(f"--steps and --log-every must be >= 1 (got {args.steps}, {args.log_every})")
    return config


def deterministic_kwargs(torch_class, kwargs: dict) -> dict:
    """Drop-path and dropout off in both models (their random masks cannot be shared)."""
    try:
        accepted = inspect.signature(torch_class).parameters
    except (TypeError, ValueError):
        accepted = {}
    out = dict(kwargs)
    for key in ("drop_path_rate", "drop_rate", "attn_drop_rate"):
        if float(out.get(key, 0.0) or 0.0) > 0:
            raise CompareError(f"--kwargs {key}={out[key]}: stochastic layers must be off in a run-level comparison")
        if key in accepted:
            out[key] = 0.0
    return out


# --- the run -------------------------------------------------------------------------------------

class Recorder:
    """Everything the report holds, filled step by step."""

    def __init__(self):
        self.data: dict = {"steps": [], "loss_jax": [], "loss_torch": [], "loss_floor": [], "log_steps": [],
                           "param_rel_diff": [], "floor_rel_diff": [], "ratio": [], "ema_rel_diff": [],
                           "ema_floor_rel_diff": [], "ema_ratio": [], "param_rel_diff_groups": {},
                           "floor_rel_diff_groups": {}, "ratio_groups": {}, "evals": []}

    def step(self, step: int, loss_jax: float, loss_torch: float, loss_floor: Optional[float]) -> None:
        d = self.data
        d["steps"].append(step)
        d["loss_jax"].append(loss_jax)
        d["loss_torch"].append(loss_torch)
        d["loss_floor"].append(loss_floor)

    def divergence(self, step: int, jax_vs_torch: dict, floor: Optional[dict], ema: dict,
                   ema_floor: Optional[dict]) -> None:
        d, whole = self.data, divergence.WHOLE
        d["log_steps"].append(step)
        d["param_rel_diff"].append(jax_vs_torch[whole])
        d["ema_rel_diff"].append(ema[whole])
        d["floor_rel_diff"].append(None if floor is None else floor[whole])
        d["ema_floor_rel_diff"].append(None if ema_floor is None else ema_floor[whole])
        d["ratio"].append(_ratio(jax_vs_torch[whole], floor and floor[whole]))
        d["ema_ratio"].append(_ratio(ema[whole], ema_floor and ema_floor[whole]))
        for group, value in jax_vs_torch.items():
            if group == whole:
                continue
            d["param_rel_diff_groups"].setdefault(group, []).append(value)
            d["floor_rel_diff_groups"].setdefault(group, []).append(None if floor is None else floor[group])
            d["ratio_groups"].setdefault(group, []).append(_ratio(value, floor and floor[group]))


def _ratio(value: float, floor: Optional[float]) -> Optional[float]:
    if floor is None:
        return None
    if floor == 0.0:
        return 1.0 if value == 0.0 else math.inf
    return value / floor


def evaluate_all(step: int, models: dict, eval_set: list, conv) -> dict:
    """PSNR/SSIM of every ``{label: restorer}`` (and bicubic) on the validation images."""
    from iln_jax.evaluation.evaluate import evaluate_dataset
    row = {"step": step}
    for i, (label, restorer) in enumerate(models.items()):
        result = evaluate_dataset(restorer, eval_set, conv, dataset="validation", save_images=False,
                                  with_baseline=i == 0, progress=False)
        row[label] = {"psnr": result["psnr"], "ssim": result["ssim"]}
        if i == 0:
            row["bicubic"] = {"psnr": result["baseline"]["psnr"], "ssim": result["baseline"]["ssim"]}
    return row


class Comparison:
    """The three runs (iln_jax, PyTorch, PyTorch + 1 ulp) of one comparison, set up from ``args``."""

    def __init__(self, args):
        from iln_jax import data as data_lib
        from iln_jax.evaluation import tasks
        from iln_jax.evaluation.evaluate import measurable
        from iln_jax.inference.runner import input_multiple, output_scale
        from iln_jax.train.optim import make_schedule

        self.args = args
        config = run_config(args)
        kwargs = parse_json(args.kwargs, "--kwargs")
        official_imports.install_stand_ins()
        kwargs = deterministic_kwargs(import_object(args.torch_class, args.torch_repo), kwargs)
        patch, channels = int(config.data.patch_size), in_channels(kwargs)
        self.pair = build_pair(torch_class=args.torch_class, torch_repo=args.torch_repo, kwargs=kwargs,
                               flax_kwargs=parse_json(args.flax_kwargs, "--flax-kwargs"), arch=args.arch,
                               flax_class=args.flax_class, sequences=[s for s in args.sequences.split(",") if s],
                               sample_shape=(1, patch, patch, channels), seed=args.seed, pth=args.pth,
                               param_key=args.param_key)
        if args.precision == "highest":
            parity.set_parity_precision()  # after torch's import, so that its TF32 flags are set too
        module = self.pair.flax_module
        scale = output_scale(module)
        _check_task(config, scale, args.config)
        config.lock()
        self.config = config

        schedule = make_schedule(config.optim)
        o = config.optim
        recipe = dict(schedule=lambda t: float(schedule(t)), b1=o.b1, b2=o.b2, eps=o.eps, ema_decay=o.ema_decay,
                      multiple=input_multiple(module), padding=getattr(module, "padding", "none"), scale=scale)
        floor_model = None if args.no_floor else copy_module(self.pair.torch_model)
        self.sides = {"jax": JaxTrainer(config, self.pair, patch_size=patch, in_channels=channels),
                      "torch": TorchTrainer(self.pair.torch_model, **recipe)}
        if floor_model is not None:
            perturb_one_ulp(floor_model, args.floor_seed)
            self.sides["floor"] = TorchTrainer(floor_model, **recipe)
        self.sides["jax"].names = self.sides["torch"].names

        self.conv = tasks.convention(config.data.task, scale)
        self.eval_set = measurable(data_lib.make_eval_set(config.data), self.conv, dataset="validation",
                                   on_bad_image=config.data.on_bad_image)
        self.batches = data_lib.make_train_dataset(config.data, seed=config.seed, process_index=0, process_count=1)

    def divergences(self) -> tuple:
        """(jax vs torch, floor vs torch) for the parameters and for the EMA (None without a floor)."""
        ref, ref_ema = self.sides["torch"].params(), self.sides["torch"].ema_params()
        floor = self.sides.get("floor")
        rel = divergence.relative_difference
        return (rel(self.sides["jax"].params(), ref), floor and rel(floor.params(), ref),
                rel(self.sides["jax"].ema_params(), ref_ema), floor and rel(floor.ema_params(), ref_ema))

    def evaluate(self, step: int) -> dict:
        weights = ("raw", "ema") if self.config.optim.ema_decay > 0 else ("raw",)
        restorers = {f"{name}_{which}": side.restorer(which) for which in weights for name, side in self.sides.items()}
        return evaluate_all(step, restorers, self.eval_set, self.conv)


def _check_task(config, scale: int, spec: str) -> None:
    """The config's task fits the model's output scale (SR: the data's scale becomes the model's)."""
    if config.data.task == "sr":
        if scale < 2:
            raise CompareError(f"--config {spec} trains super-resolution but the model's output scale is {scale}")
        config.data.scale = scale
    elif scale != 1:
        raise CompareError(f"--config {spec} trains task {config.data.task!r} (scale 1) but the model upscales "
                           f"by {scale}")


def compare_training(args) -> dict:
    """Run the comparison of ``args`` (:func:`parse_args`); returns the report it writes."""
    run = Comparison(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec = Recorder()
    data_iter = iter(run.batches)
    t_start = time.perf_counter()
    try:
        rec.divergence(0, *run.divergences())
        print(progress_line(rec, 0), flush=True)
        for step in range(1, args.steps + 1):
            batch = {k: np.asarray(v) for k, v in next(data_iter).items()}
            losses = {name: side.step(batch) for name, side in run.sides.items()}
            rec.step(step, losses["jax"], losses["torch"], losses.get("floor"))
            if not all(math.isfinite(v) for v in losses.values()):
                raise CompareError(f"non-finite loss at step {step} ({losses}); lower optim.lr (--set optim.lr=...)")
            if step % args.log_every == 0 or step == args.steps:
                rec.divergence(step, *run.divergences())
                print(progress_line(rec, step), flush=True)
            if step == args.steps or (args.eval_every > 0 and step % args.eval_every == 0):
                rec.data["evals"].append(run.evaluate(step))
                print("[compare train] " + format_eval(rec.data["evals"][-1]), flush=True)
    finally:
        if hasattr(data_iter, "close"):
            data_iter.close()
    timing = {"jax_compile_seconds": run.sides["jax"].compile_seconds,
              **{f"{name}_seconds": side.seconds for name, side in run.sides.items()}}
    report = build_report(rec, args=args, config=run.config, pair=run.pair, timing=timing,
                          wall=time.perf_counter() - t_start)
    (out / REPORT).write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    written = [out / REPORT]
    if plot.write_figure(report, out / FIGURE):
        written.append(out / FIGURE)
    print(format_summary(report))
    print("[compare train] wrote " + ", ".join(str(p) for p in written if p.is_file()), flush=True)
    return report


def progress_line(rec: Recorder, step: int) -> str:
    d = rec.data
    losses = f"loss jax {d['loss_jax'][-1]:.5f} torch {d['loss_torch'][-1]:.5f}" if step else "same start"
    floor = "" if d["ratio"][-1] is None else f" (floor {d['floor_rel_diff'][-1]:.2e}, ratio {d['ratio'][-1]:.2f})"
    return (f"[compare train] step {step}: {losses} | params rel diff {d['param_rel_diff'][-1]:.2e}{floor} | "
            f"ema {d['ema_rel_diff'][-1]:.2e}")


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v)}")


def format_eval(row: dict) -> str:
    parts = [f"{label} {v['psnr']:.3f} dB / {v['ssim']:.4f}" for label, v in row.items() if label != "step"]
    return f"step {row['step']} PSNR/SSIM: " + ", ".join(parts)


def build_report(rec: Recorder, *, args, config, pair: ModelPair, timing: dict, wall: float) -> dict:
    """``report.json``'s content: the recorded curves and evaluations, the final PSNRs (EMA weights
    when the recipe has an EMA), the recipe, precision, versions and ``timing`` (seconds per side)."""
    import torch
    d = dict(rec.data)
    final = d["evals"][-1] if d["evals"] else {}
    use = "ema" if config.optim.ema_decay > 0 else "raw"
    for label in ("jax", "torch", "floor"):
        if f"{label}_{use}" in final:
            d[f"psnr_{label}"] = final[f"{label}_{use}"]["psnr"]
            d[f"ssim_{label}"] = final[f"{label}_{use}"]["ssim"]
    if "bicubic" in final:
        d["psnr_bicubic"], d["ssim_bicubic"] = final["bicubic"]["psnr"], final["bicubic"]["ssim"]
    d["evaluated_weights"] = use
    d["first_to_drift"] = divergence.first_to_drift(d["ratio_groups"], d["log_steps"], args.drift_factor) \
        if not args.no_floor else {}
    steps_timed = max(1, args.steps - 1)
    d["timing"] = {**timing, "wall_seconds": wall,
                   "jax_ms_per_step": 1e3 * timing["jax_seconds"] / steps_timed,
                   "torch_ms_per_step": 1e3 * timing["torch_seconds"] / args.steps}
    d["recipe"] = {
        "torch_class": args.torch_class, "arch": args.arch, "flax_class": args.flax_class, "kwargs": pair.kwargs,
        "flax_kwargs": pair.flax_kwargs, "config": args.config, "set": args.set, "steps": args.steps,
        "batch": int(config.data.batch_size), "patch": int(config.data.patch_size), "scale": int(config.data.scale),
        "lr": float(config.optim.lr), "schedule": config.optim.schedule,
        "milestones": list(config.optim.get("milestones", ())), "gamma": float(config.optim.gamma),
        "betas": [float(config.optim.b1), float(config.optim.b2)], "eps": float(config.optim.eps),
        "ema_decay": float(config.optim.ema_decay), "data_seed": int(config.seed), "init_seed": args.seed,
        "pth": args.pth, "log_every": args.log_every, "floor": not args.no_floor, "floor_seed": args.floor_seed,
        "drift_factor": args.drift_factor,
    }
    d["precision"] = parity.precision_settings()
    d["versions"] = {"jax": jax.__version__, "torch": torch.__version__, "python": platform.python_version(),
                     "device": str(jax.devices()[0].device_kind), "machine": platform.machine()}
    d["params"] = int(sum(p.numel() for p in pair.torch_model.parameters()))
    return d


def format_summary(r: dict) -> str:
    lines = [f"== run-level comparison: {r['recipe']['torch_class']} vs iln_jax, {r['recipe']['steps']} steps =="]
    lines.append(f"final loss (last step): jax {r['loss_jax'][-1]:.5f}  torch {r['loss_torch'][-1]:.5f}")
    ratio = r["ratio"][-1]
    lines.append(f"params rel diff at the end: {r['param_rel_diff'][-1]:.2e}"
                 + ("" if ratio is None else f"  floor {r['floor_rel_diff'][-1]:.2e}  ratio {ratio:.2f}"))
    if r["ema_ratio"][-1] is not None:
        lines.append(f"EMA rel diff at the end: {r['ema_rel_diff'][-1]:.2e}  floor {r['ema_floor_rel_diff'][-1]:.2e}"
                     f"  ratio {r['ema_ratio'][-1]:.2f}")
    if "psnr_jax" in r:
        lines.append(f"PSNR ({r['evaluated_weights']} weights): jax {r['psnr_jax']:.3f}  torch {r['psnr_torch']:.3f}"
                     + (f"  torch+1ulp {r['psnr_floor']:.3f}" if "psnr_floor" in r else "")
                     + f"  bicubic {r['psnr_bicubic']:.3f} dB  (jax - torch {r['psnr_jax'] - r['psnr_torch']:+.3f} dB)")
    drift = r.get("first_to_drift")
    if drift:
        lines.append(f"first group beyond {r['recipe']['drift_factor']:g}x its floor: {drift['group']} at step "
                     f"{drift['step']} ({drift['ratio']:.1f}x)")
    elif r["recipe"]["floor"]:
        lines.append(f"no module group went beyond {r['recipe']['drift_factor']:g}x its floor")
    return "\n".join(lines)


def main(argv=None) -> dict:
    return compare_training(parse_args(argv))

"""One run of a grid: train (resumable), then evaluate and measure the final weights.

Training is ``train_and_evaluate`` in the run's work directory, so an interrupted run resumes
exactly; the measurements are recomputed from the checkpoint and written last, to
``grid_result.json``, whose presence marks the run finished. A run that stops on a non-finite loss
is finished too: it is the paper's "did not converge" and is reported as such.
"""
from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from iln_jax.errors import IlnJaxError
from iln_jax.evaluation import benchmarks, tasks
from iln_jax.evaluation.checkpoints import load_run
from iln_jax.evaluation.evaluate import evaluate_dataset, measurable
from iln_jax.evaluation.precision import precision_report
from iln_jax.experiments import convergence
from iln_jax.experiments.plan import GridRun
from iln_jax.inference.runner import Restorer, input_multiple, output_scale, pad_batch, padded_size
from iln_jax.layers.norm_registry import module_class, resolve_norm
from iln_jax.paths import dump_json
from iln_jax.train import NonFiniteLossError, train_and_evaluate

_STOCHASTIC_FIELDS = ("drop_rate", "attn_drop_rate", "drop_path_rate")


class BatchStatisticsRestorer:
    """Inference with the norms in train mode: each image normalized by its own batch statistics
    (the paper's "BN (train)" row; any norm with a ``train`` field); everything else
    deterministic (drop rates set to 0)."""

    def __init__(self, module, variables: dict):
        zero = {f: 0.0 for f in _STOCHASTIC_FIELDS if hasattr(module, f)}
        self.module = module.clone(padding="none", **zero) if hasattr(module, "padding") else module.clone(**zero)
        self.padding = getattr(module, "padding", "none")
        self.multiple, self.scale = input_multiple(module), output_scale(module)
        self.variables = jax.device_put(variables)
        mutable = [c for c in variables if c != "params"]
        self._fn = jax.jit(lambda v, x: self.module.apply(v, x, train=True, mutable=mutable)[0])

    def restore(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        ph, pw = (padded_size(s, self.multiple, self.padding) for s in (h, w))
        out = self._fn(self.variables, pad_batch(np.asarray(image, np.float32)[None], ph, pw, self.padding))
        return np.asarray(jax.device_get(out), np.float32)[0, :h * self.scale, :w * self.scale]


def has_train_mode(norm: str) -> bool:
    """Whether the norm behaves differently in training (a ``train`` field, e.g. BatchNorm): then
    Table 1 also reports it evaluated with the images' own statistics."""
    spec = resolve_norm(norm)
    return any("train" in getattr(module_class(f), "__dataclass_fields__", {}) for f in (spec.branch, spec.outer))


def eval_sets(task: str, scale: int, data_root: Optional[str], datasets: list[str], channels: int = 3,
              on_bad_image: str = "error"):
    """``{dataset name: eval set}``: the benchmark folders under ``data_root`` (the name ``embedded``:
    the embedded held-out photos), else the embedded photos alone; bad images as ``data.on_bad_image``."""
    if not data_root and not datasets:
        datasets = ["embedded"]
    out = {}
    for name in datasets or benchmarks.default_datasets(task):
        if name == "embedded":
            out[name] = benchmarks.load(benchmarks.embedded_config(task, scale=scale, channels=channels))
            continue
        label, folder = benchmarks.resolve_dataset(data_root, name)
        out[label] = benchmarks.load(benchmarks.data_config(task, folder, scale=scale, channels=channels,
                                                            on_bad_image=on_bad_image))
    return out


def _summary_status(summary: dict) -> str:
    return summary.get("status", "completed")


def execute(run: GridRun, config, *, data_root: Optional[str], datasets: list[str],
            precisions: tuple[str, ...] = ("fp16", "bf16", "int8", "int4")) -> dict:
    """Train (or resume) and measure one run; returns (and writes) its result."""
    diverged = None
    try:
        summary = train_and_evaluate(config, run.workdir)
    except NonFiniteLossError as e:
        diverged, summary = str(e), {"status": "non-finite loss"}
    result = {"norm": run.norm, "seed": run.seed, "workdir": str(run.workdir), "status": _summary_status(summary),
              "diverged": diverged, "final_step": summary.get("final_step"),
              "wall_seconds": summary.get("wall_seconds"), "final_loss": summary.get("final_train_loss")}
    if result["status"] not in ("completed", "non-finite loss"):
        return result  # preempted: not finished, no result file (the next grid call resumes it)
    try:
        loaded = load_run(run.workdir, weights="ema")
    except IlnJaxError as e:
        if diverged is None:
            raise
        loaded, result["load_error"] = None, str(e)
    task = config.data.task
    scale = int(config.data.scale) if task == "sr" else 1
    conv = tasks.convention(task, scale)
    sets = eval_sets(task, scale, data_root, datasets, channels=config.data.get("channels", 3),
                     on_bad_image=config.data.on_bad_image)
    sets = {name: measurable(images, conv, dataset=name, on_bad_image=config.data.on_bad_image)
            for name, images in sets.items()}
    result["datasets"], result["precision"] = {}, {}
    if loaded is not None:
        module, variables = loaded.module, loaded.variables
        modes = {"eval": functools.partial(Restorer, module, variables)}
        if has_train_mode(run.norm) and any(c != "params" for c in variables):
            modes["train"] = functools.partial(BatchStatisticsRestorer, module, variables)
        for name, images in sets.items():
            row = {}
            for mode, make in modes.items():
                r = evaluate_dataset(make(), images, conv, dataset=name, save_images=False, progress=False)
                row[mode] = {k: r[k] for k in ("psnr", "ssim", "nonfinite_pixels")}
                row["bicubic"] = r["baseline"]
            result["datasets"][name] = row
        if precisions:
            target = next(iter(sets))
            result["precision"] = {"dataset": target,
                                   **precision_report(module, variables, sets[target], conv, precisions=precisions)}
        result["weights"] = loaded.weights
    logged = logged_losses(run.workdir)
    ends = [logged[0], logged[-1]] if logged else []
    result["losses"], result["loss_steps"] = [loss for _, loss in ends], [step for step, _ in ends]
    result["not_converged"] = convergence.failures(result)
    result["converged"] = not result["not_converged"]
    dump_json(result, run.result_path)
    return result


def logged_losses(workdir: Path) -> list[tuple[int, float]]:
    """(step, training loss) of every logged step."""
    path = Path(workdir) / "metrics_train.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(f) if row.get("loss")]

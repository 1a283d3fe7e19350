"""Benchmark evaluation (``eval.py`` is a thin CLI over this package).

* ``tasks``       -- benchmark names and metric conventions per task (SR: Y, crop = scale; DN: RGB; CAR/DR: Y)
* ``benchmarks``  -- benchmark folder layouts -> ``iln_jax.data.make_eval_set`` configs
* ``checkpoints`` -- models from Orbax training runs (EMA/raw) or official .pth files, with mismatch errors
* ``evaluate``    -- restore + measure a dataset, PNGs, ``results.{json,md}``, ``summary.{json,md}``
* ``precision``   -- the fp16 / bf16 / int8 / int4 table (PSNR vs fp32, non-finite pixels)
"""
from iln_jax.evaluation.checkpoints import CheckpointMismatchError, LoadedModel, load_pth, load_run
from iln_jax.evaluation.evaluate import evaluate_dataset, write_summary
from iln_jax.evaluation.tasks import BENCHMARKS, Convention, convention

__all__ = ["BENCHMARKS", "CheckpointMismatchError", "Convention", "LoadedModel", "convention", "evaluate_dataset",
           "load_pth", "load_run", "write_summary"]

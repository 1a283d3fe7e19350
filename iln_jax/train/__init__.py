"""Training: ``train_and_evaluate(config, workdir)`` and the pieces it is built from.

* :mod:`~iln_jax.train.state` -- ``TrainState`` (step, params, opt_state, ema_params, model_state, rng)
* :mod:`~iln_jax.train.optim` -- Adam/AdamW, multistep / cosine-restart schedules, grad clipping
* :mod:`~iln_jax.train.step` -- the pure ``train_step`` and the losses
* :mod:`~iln_jax.train.step_factory` -- ``make_step(config, model, parallel)``: the run's first state and its
  compiled step, the one way every caller (loop, benchmarks, comparisons, tests) builds them
* :mod:`~iln_jax.train.parallel` -- ``mesh`` (jit on a device mesh) and ``pmap`` data parallelism
* :mod:`~iln_jax.train.checkpoint` -- Orbax checkpoints with the data iterator and config; failed saves
  stop the run, damaged steps are set aside (:mod:`~iln_jax.train.checkpoint_integrity` says what counts)
* :mod:`~iln_jax.train.storage` -- which write failures stop the run with a one-line ``StorageError``
* :mod:`~iln_jax.train.resume` -- resume checks (model changes refuse), ``init_from``
* :mod:`~iln_jax.train.workdir_lock` -- one run per work directory
* :mod:`~iln_jax.train.preemption` -- SIGTERM: save and stop, with a grace period
* :mod:`~iln_jax.train.orbax_noise` -- Orbax's duplicate failure logs silenced (failures are reported once)
* :mod:`~iln_jax.train.validate` -- full-image validation, PSNR/SSIM, PNGs
* :mod:`~iln_jax.train.logging` -- TensorBoard, CSV/JSON metric logs, progress bar
  (:mod:`~iln_jax.train.event_file`: the TensorBoard event files, written without TensorFlow or PyTorch)
* :mod:`~iln_jax.train.phases` -- progressive patch phases; :mod:`~iln_jax.train.batches` -- the batches of
  each step across them (:mod:`~iln_jax.train.prefetch`: on the devices ahead of their step)

``train_and_evaluate`` is built from these (:mod:`~iln_jax.train.loop`):

* :mod:`~iln_jax.train.run` -- the fixed pieces of one run (model, step, phases, checkpointer)
* :mod:`~iln_jax.train.startup` -- what the run starts from: its newest checkpoint, ``init_from``, or nothing
* :mod:`~iln_jax.train.loop` -- ``train_and_evaluate`` and the loop itself, ``train_steps``
* :mod:`~iln_jax.train.compiled_step` -- the step compiled once per phase; :mod:`~iln_jax.train.clock` --
  training time without the time spent aside
* :mod:`~iln_jax.train.hooks` -- what happens after each step: log rows, diagnostics, checkpoints,
  validation, ``on_step``, the lock, preemption; the non-finite stop
* :mod:`~iln_jax.train.summary` -- ``summary.json`` and the table printed at the end
"""
from iln_jax.train.configs import load_config, validate_config
from iln_jax.train.loop import NonFiniteLossError, build_model, train_and_evaluate
from iln_jax.train.parallel import DataParallel
from iln_jax.train.state import TrainState, create_train_state
from iln_jax.train.step import train_step
from iln_jax.train.step_factory import make_step

__all__ = ["DataParallel", "NonFiniteLossError", "TrainState", "build_model", "create_train_state",
           "load_config", "make_step", "train_and_evaluate", "train_step", "validate_config"]

"""The training input pipeline: a grain ``IterDataset`` of ``{"lq", "gt"}`` batches.

Graph (all random-access until the last two stages)::

    range(k * num_images) .seed(seed) .shuffle() .repeat()  # reshuffled every pass, infinite
      .random_map(PatchSampler)                              # rng = f(seed, global element index)
      .batch(batch_size // process_count)                    # micro-batch m = elements [m*b, (m+1)*b)
      [process_index::process_count]                         # this process's micro-batches
      .to_iter_dataset(threads) .mp_prefetch(workers)        # parallel decode; order preserved
      -> ReportBadImages                                     # strips the skip marker, counts skips

Guarantees (tested in tests/data_pipeline_test.py):

* **Determinism**: batch k is a function of (config, seed, k, process_index, process_count) only;
  the number of workers or threads does not change it (grain slices whole micro-batches across
  workers and interleaves them back in order).
* **Multi-host**: at step k, process p holds elements ``[k*B + p*b, k*B + (p+1)*b)`` of the global
  stream (B = batch_size, b = B / process_count), so concatenating the process batches in process
  order gives exactly the batch k of a single-process run with the same seed. That is the row order
  ``jax.make_array_from_process_local_data`` assembles on a data-parallel mesh.
* **Checkpointing**: iterators support ``get_state``/``set_state`` (and so
  ``grain.checkpoint.CheckpointSave/CheckpointRestore`` in an orbax Composite); after a restore the
  next batch equals the one an uninterrupted run would have produced.
"""
from __future__ import annotations

import math
from typing import Optional

import grain
import ml_collections
from absl import flags

from iln_jax.data import config as config_lib
from iln_jax.data import degradations, embedded, patches, skip_report, sources

# grain's index_shuffle cycle-walks, very slowly on small ranges (docs/design_measurements.md). So
# the shuffled range has at least this many entries, entry i meaning image i % num_images: small
# sets then list each image k times per shuffled pass, as BasicSR's dataset_enlarge_ratio does.
_MIN_SHUFFLE_ENTRIES = 10_000
# Default TFDS data set per task when ``tfds_name`` is unset.
_DEFAULT_TFDS = {"dn": "df2k/hr", "car": "df2k/hr", "dr": "rain13k"}


def make_train_dataset(config: ml_collections.ConfigDict, *, seed: int, process_index: Optional[int] = None,
                       process_count: Optional[int] = None) -> grain.IterDataset:
    """Infinite training batches for this process: ``{"lq": (b, p, p, C), "gt": (b, p*s, p*s, C)}``.

    float32 in [0, 1] (denoising inputs are unclipped), b = batch_size / process_count.
    ``process_index``/``process_count`` default to ``jax.process_index()/process_count()``; the
    batches of processes 0..n-1 at a step, concatenated in that order, are the batch a single-process
    run with the same seed sees at that step. ``seed`` (>= 0) fixes every batch. Iterators
    are ``grain.DatasetIterator``s (``skipped_patches``/``bad_images`` report skipped files); close
    them when done to stop worker processes.
    """
    config_lib.check_config(config)
    if process_index is None or process_count is None:
        import jax  # Imported on use so that worker processes need not import it.

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    if config.batch_size % process_count:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by process_count {process_count}")

    degradation = degradations.Degradation.from_config(config)
    source = open_train_source(config, degradation, allow_prepare=process_count == 1)
    sampler = patches.PatchSampler(source, degradation, config.patch_size, augment=config.augment,
                                   skip_bad_images=config.on_bad_image == "skip")
    local_batch = config.batch_size // process_count
    entries = len(source) * math.ceil(_MIN_SHUFFLE_ENTRIES / len(source))
    dataset = (
        grain.MapDataset.range(entries).seed(seed).shuffle().repeat()
        .random_map(sampler)
        .batch(local_batch, drop_remainder=True)[process_index::process_count]
        .to_iter_dataset(grain.ReadOptions(num_threads=config.read_threads,
                                           prefetch_buffer_size=config.read_threads)))
    if config.num_workers > 0:
        _allow_grain_workers()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=config.num_workers, per_worker_buffer_size=config.worker_buffer_size))
    return skip_report.ReportBadImages(dataset, sampler.problem)


def open_train_source(config: ml_collections.ConfigDict, degradation: degradations.Degradation, *,
                      allow_prepare: bool) -> patches.Source:
    """The training images named by ``config.source``.

    ``allow_prepare`` lets a TFDS source prepare itself from ``config.root``; multi-process jobs
    must prepare beforehand so that hosts do not race to write the same files.
    """
    if config.source == "embedded":
        return embedded.EmbeddedSource("train", channels=config.channels, gray=degradation.gray)
    if config.source == "folder":
        return sources.FolderSource.from_folders(config.task, config.root, config.lr_root, scale=degradation.scale,
                                                 channels=config.channels, gray=degradation.gray)
    from iln_jax.data import tfds_builders  # Imported on use: TFDS is heavy and optional.

    name = config.tfds_name or _DEFAULT_TFDS.get(config.task, f"df2k/x{degradation.scale}")
    return tfds_builders.open_source(name, config.tfds_data_dir, manual_dir=config.root if allow_prepare else None,
                                     channels=config.channels, gray=degradation.gray)


def _allow_grain_workers() -> None:
    """Work around grain 0.2.18 failing to start workers when absl flags are unparsed.

    Starting worker processes reads an absl flag; in programs not run under ``absl.app`` (with jax
    imported) that raises ``UnparsedFlagAccessError`` (google/grain#1355, fixed after 0.2.18).
    Marking the flags parsed keeps every default and is a no-op for programs that parsed them.
    """
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()

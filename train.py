"""Train an image-restoration transformer.

    python train.py                                              # the main job: configs/default.py
    python train.py --config configs/swinir.py:task=sr,scale=4,norm=iln --config.data.batch_size=32
    python train.py --config configs/hat_mini_iln.py:scale=2 --workdir /data/runs/hat-mini-x2

The work directory (default ``runs/<config.name>``; a local or mounted file system, shared by
all hosts) holds checkpoints, logs and images; running the same command again resumes from its
latest checkpoint. Keys that do not exist in the config are errors.

Multi-host (one process per host): pass ``--coordinator_address=host0:1234 --num_processes=N
--process_id=i`` (or set ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``);
on Cloud TPU pods, Slurm and other clusters JAX detects all three: pass ``--distributed``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # so that config files can ``from configs import common``

config_flags.DEFINE_config_file("config", str(ROOT / "configs" / "default.py"),
                                "Config file, optionally with ':args', e.g. configs/swinir.py:task=sr,scale=2",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory (default: runs/<config.name>)")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-host training")
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts), for multi-host training")
flags.DEFINE_integer("process_id", None, "Index of this process, for multi-host training")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() and let JAX detect the cluster "
                  "(Cloud TPU pods, Slurm, ...)")


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None,
                           auto: bool = False) -> None:
    """Start JAX's multi-process runtime from flags, else the environment, else cluster detection."""
    import jax
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if coordinator_address or num_processes is not None or process_id is not None:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    elif auto:
        jax.distributed.initialize()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           auto=FLAGS.distributed)
    from iln_jax.train import train_and_evaluate
    config = FLAGS.config
    workdir = FLAGS.workdir or str(Path("runs") / config.name)
    summary = train_and_evaluate(config, workdir)
    return 0 if summary["status"] in ("completed", "preempted") else 1


if __name__ == "__main__":
    app.run(main)

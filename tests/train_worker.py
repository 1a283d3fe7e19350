"""A training process for the multi-process, kill-and-resume, SIGTERM and fault tests (run as a script).

``--kill-at k`` SIGKILLs this process right after step k; ``--term-at k`` sends it SIGTERM (a
preemption notice) after step k. With ``--coordinator`` the process joins a multi-process job.
Fault injection (tests/faults_*_test.py): ``--kill-after S`` SIGKILLs it S seconds after its first
step, wherever it is; ``--term-in-save k`` sends SIGTERM from inside the checkpoint save of step k,
``--kill-in-save k`` SIGKILLs it once that save has started (its asynchronous commit in flight);
``--block-at k`` blocks for ever after step k (printing ``BLOCKED``), as a loop stuck in I/O;
``--fill-disk-at k`` fills the work directory's file system after step k; ``--fsize-limit-at
k:bytes`` sets RLIMIT_FSIZE after step k, so that writes growing a file past ``bytes`` fail.
Errors of the project are printed as one line and set the exit status, as train.py does.
``--fake-gcs DIR`` serves ``gs://`` work directories from DIR (tests/cloud_fake.py).
"""
import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def wait_for_saves(directory: str) -> None:
    """Until the checkpoint save in progress, if any, is committed (a test wants the next to fail)."""
    checkpoints = Path(directory) / "checkpoints"
    deadline = time.time() + 60
    while time.time() < deadline and any(".orbax-checkpoint-tmp" in p.name for p in checkpoints.iterdir()):
        time.sleep(0.05)


def fill_disk(directory: str) -> None:
    """Write zeros into ``directory/FILLER`` until the file system is full."""
    wait_for_saves(directory)
    block = b"\0" * (1 << 16)
    with open(os.path.join(directory, "FILLER"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        for size in (4096, 512, 1):  # the last bytes too
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--overrides", default="{}", help="JSON dict of config overrides, or a list of them: "
                   "one run each, in <workdir>/<i> (dumps to <dump>_<i>.npz)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--kill-at", type=int, default=0)
    p.add_argument("--term-at", type=int, default=0)
    p.add_argument("--kill-after", type=float, default=0.0)
    p.add_argument("--term-in-save", type=int, default=0)
    p.add_argument("--kill-in-save", type=int, default=0)
    p.add_argument("--block-at", type=int, default=0)
    p.add_argument("--fill-disk-at", type=int, default=0)
    p.add_argument("--fsize-limit-at", default="")
    p.add_argument("--wait-at", default="")
    p.add_argument("--coordinator", default="")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--dump", default="", help="write this process's final params (npz) here")
    p.add_argument("--fake-gcs", default="", help="serve gs:// from this local folder (tests/cloud_fake.py)")
    a = p.parse_args()

    import jax
    if a.coordinator:
        jax.distributed.initialize(coordinator_address=a.coordinator, num_processes=a.num_processes,
                                   process_id=a.process_id)
    from train_util import tiny_config
    if a.fake_gcs:
        import cloud_fake
        import pytest
        cloud_fake.install(pytest.MonkeyPatch(), a.fake_gcs)
    import numpy as np
    from iln_jax.errors import run_main
    from iln_jax.train import train_and_evaluate
    from iln_jax.train.state import host_copy

    if a.term_in_save or a.kill_in_save:
        import orbax.checkpoint as ocp
        original_save = ocp.CheckpointManager.save

        def save(self, step, *args, **kwargs):
            if step == a.term_in_save:
                os.kill(os.getpid(), signal.SIGTERM)  # handled in this thread right away, mid-save
            saved = original_save(self, step, *args, **kwargs)
            if step == a.kill_in_save:
                os.kill(os.getpid(), signal.SIGKILL)  # dies while the save's asynchronous commit is in flight
            return saved
        ocp.CheckpointManager.save = save

    overrides = json.loads(a.overrides)
    runs = overrides if isinstance(overrides, list) else [overrides]
    for i, run in enumerate(runs):
        config = tiny_config(a.config, **run)
        workdir = a.workdir if len(runs) == 1 else os.path.join(a.workdir, str(i))
        dump = a.dump if len(runs) == 1 else f"{a.dump}_{i}.npz"

        def on_step(step, state):
            print(f"STEP {step}", flush=True)
            if a.kill_after and not getattr(on_step, "timer", None):
                on_step.timer = threading.Timer(a.kill_after, os.kill, (os.getpid(), signal.SIGKILL))
                on_step.timer.daemon = True
                on_step.timer.start()
            if a.dump and step == config.train.num_steps:
                flat = jax.tree_util.tree_flatten_with_path(host_copy(state.params))[0]
                np.savez(dump, **{jax.tree_util.keystr(k): v for k, v in flat})
            if step == a.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if step == a.term_at:
                os.kill(os.getpid(), signal.SIGTERM)
            if step == a.fill_disk_at:
                fill_disk(workdir)
            if a.fsize_limit_at and step == int(a.fsize_limit_at.split(":")[0]):
                limit = int(a.fsize_limit_at.split(":")[1])
                wait_for_saves(workdir)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            if a.wait_at and step == int(a.wait_at.split(":")[0]):
                while not os.path.exists(a.wait_at.split(":", 1)[1]):
                    time.sleep(0.05)
            if step == a.block_at:
                print("BLOCKED", flush=True)
                threading.Event().wait()  # a write that never returns

        summary = run_main("worker", lambda: train_and_evaluate(config, workdir, on_step=on_step))
        print("SUMMARY " + json.dumps({k: summary[k] for k in ("status", "final_step", "start_step")}),
              flush=True)


if __name__ == "__main__":
    main()

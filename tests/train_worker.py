"""A training process for the multi-process, kill-and-resume and SIGTERM tests (run as a script).

``--kill-at k`` SIGKILLs this process right after step k; ``--term-at k`` sends it SIGTERM (a
preemption notice) after step k. With ``--coordinator`` the process joins a multi-process job.
"""
import argparse
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--overrides", default="{}", help="JSON dict of config overrides, or a list of them: "
                   "one run each, in <workdir>/<i> (dumps to <dump>_<i>.npz)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--kill-at", type=int, default=0)
    p.add_argument("--term-at", type=int, default=0)
    p.add_argument("--coordinator", default="")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--dump", default="", help="write this process's final params (npz) here")
    a = p.parse_args()

    import jax
    if a.coordinator:
        jax.distributed.initialize(coordinator_address=a.coordinator, num_processes=a.num_processes,
                                   process_id=a.process_id)
    from train_util import tiny_config
    import numpy as np
    from iln_jax.train import train_and_evaluate
    from iln_jax.train.state import host_copy

    overrides = json.loads(a.overrides)
    runs = overrides if isinstance(overrides, list) else [overrides]
    for i, run in enumerate(runs):
        config = tiny_config(a.config, **run)
        workdir = a.workdir if len(runs) == 1 else os.path.join(a.workdir, str(i))
        dump = a.dump if len(runs) == 1 else f"{a.dump}_{i}.npz"

        def on_step(step, state):
            if a.dump and step == config.train.num_steps:
                flat = jax.tree_util.tree_flatten_with_path(host_copy(state.params))[0]
                np.savez(dump, **{jax.tree_util.keystr(k): v for k, v in flat})
            if step == a.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if step == a.term_at:
                os.kill(os.getpid(), signal.SIGTERM)

        summary = train_and_evaluate(config, workdir, on_step=on_step)
        print("SUMMARY " + json.dumps({k: summary[k] for k in ("status", "final_step", "start_step")}),
              flush=True)


if __name__ == "__main__":
    main()

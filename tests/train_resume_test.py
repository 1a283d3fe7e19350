"""Exact resume: a run that is preempted, then SIGKILLed, then restarted ends bit-identical to an
uninterrupted run.

The interrupted runs are subprocesses (tests/train_worker.py): the first gets SIGTERM after step 3
(a preemption notice: it checkpoints and exits 0), the second resumes there and SIGKILLs itself
right after step 5 (checkpoints every 2 steps, saved asynchronously, so the step-4 save may or may
not have been committed); the run is then restarted here and resumes from the newest committed
checkpoint.
"""
import json

import jax

from iln_jax.train import train_and_evaluate
from iln_jax.train.checkpoint import load_state
from train_util import assert_trees_equal, finish, start_worker, tiny_config

SPEC = "configs/swinir.py:tiny=1"
OVERRIDES = {"train.num_steps": 8, "eval.every": -1}


def _summary(out: str):
    return json.loads(out.split("SUMMARY ", 1)[1].splitlines()[0]) if "SUMMARY " in out else None


def test_sigterm_then_sigkill_then_restart_is_bit_identical(tmp_path):
    worker = dict(num_devices=jax.device_count())
    interrupted = tmp_path / "interrupted"
    first = start_worker(SPEC, OVERRIDES, interrupted, term_at=3, **worker)
    # The uninterrupted reference, in this process while the worker runs.
    train_and_evaluate(tiny_config(SPEC, **OVERRIDES), tmp_path / "reference")

    code, out = finish(first)
    assert code == 0 and _summary(out)["status"] == "preempted" and _summary(out)["final_step"] == 3, out
    assert load_state(interrupted)[1] == 3
    code, out = finish(start_worker(SPEC, OVERRIDES, interrupted, kill_at=5, **worker))
    assert code == -9 and _summary(out) is None, out  # killed: no clean-up, no summary

    summary = train_and_evaluate(tiny_config(SPEC, **OVERRIDES), interrupted)
    assert summary["start_step"] in (3, 4) and summary["final_step"] == 8
    state, step = load_state(interrupted)
    ref_state, ref_step = load_state(tmp_path / "reference")
    assert step == ref_step == 8
    assert_trees_equal(state, ref_state)  # params, optimizer state, EMA, rng: bit for bit

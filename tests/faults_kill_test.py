"""Kill -9 inside a checkpoint save and at a random moment, SIGTERM inside a save, SIGTERM to a
blocked loop: one run interrupted all these ways in a row ends bit-identical to an uninterrupted one.

The runs are subprocesses (tests/train_worker.py) on one work directory, checkpointing every other
step (asynchronously: a save takes about as long as a step here), so the random kill lands in a save
as often as between them; each restart must reclaim the killed run's lock and resume from its newest
complete checkpoint. Every kill lands whatever the machine's speed: one is triggered by the save of
step 8 itself, and the random one hits a run that is held before its last step.
"""
import random
import signal
import time

import jax

from iln_jax.train.checkpoint import load_state
from train_util import REFERENCE_OVERRIDES, REFERENCE_SPEC as SPEC, assert_trees_equal, finish, start_worker

OVERRIDES = {**REFERENCE_OVERRIDES, "train.checkpoint_every": 2, "train.max_to_keep": 2,
             "train.sigterm_grace_seconds": 3.0}
INTERRUPTED = ("[worker] error: SIGTERM: the run could not checkpoint and stop within 3 s "
               "(train.sigterm_grace_seconds); stopped without saving the current step.")
ABANDONED = ("[iln_jax] error: SIGTERM: the run could not checkpoint and stop within 3 s "
             "(train.sigterm_grace_seconds), nor end 10 s after being interrupted")


def _steps(out: str) -> list[int]:
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("STEP ")]


def test_interrupted_every_way_then_resumed_is_bit_identical(tmp_path, reference_run):
    workdir = tmp_path / "run"
    devices = dict(num_devices=jax.device_count())

    # 1. SIGTERM arrives inside the step-4 save: that save completes, the run stops there.
    code, out = finish(start_worker(SPEC, OVERRIDES, workdir, faults={"term-in-save": 4}, **devices))
    assert code == 0 and '"status": "preempted", "final_step": 4' in out, out
    assert load_state(workdir)[1] == 4 and not (workdir / "LOCK").exists()

    # 2. The loop blocks for ever after step 6 (a write that never returns); SIGTERM cannot be
    #    honoured by saving, so after the 3 s grace the run stops with one line, lock released.
    blocked = start_worker(SPEC, OVERRIDES, workdir, faults={"block-at": 6}, **devices)
    for line in blocked.stdout:
        if line.startswith("BLOCKED"):
            break
    t0 = time.monotonic()
    blocked.send_signal(signal.SIGTERM)
    code, out = finish(blocked, timeout=60)
    assert code == 143 and time.monotonic() - t0 < 30, out
    # Interrupted, the loop unwinds and train.py's error line says so; a process that has not
    # ended 10 s later (abandon_seconds) gets the guard's own line: either way, one line.
    errors = [line for line in out.splitlines() if "error: SIGTERM: the run could not checkpoint" in line]
    assert len(errors) == 1 and errors[0].startswith((INTERRUPTED, ABANDONED)), out
    assert "Traceback" not in out and not (workdir / "LOCK").exists()

    # 3. SIGKILL once the step-8 save has started (its commit in flight), then at a seeded random moment
    #    up to 1.2 s after a restart's first step (mid-step, mid-save, wherever); that run is held before
    #    step 10, so no machine is fast enough to finish before the kill.
    held = {"wait-at": f"9:{tmp_path / 'never-created'}"}
    for faults in ({"kill-in-save": 8}, {"kill-after": random.Random(12).uniform(0.1, 1.2), **held}):
        code, out = finish(start_worker(SPEC, OVERRIDES, workdir, faults=faults, **devices))
        assert code == -9 and "SUMMARY" not in out and _steps(out), out
        assert "kill-in-save" not in faults or _steps(out)[-1] < 8  # killed in the save, before step 8 ended
        assert (workdir / "LOCK").exists()  # a killed run cannot release its lock; the next run reclaims it

    # 4. The last restart completes the run.
    code, out = finish(start_worker(SPEC, OVERRIDES, workdir, **devices))
    assert code == 0 and '"final_step": 10' in out, out
    state, step = load_state(workdir)
    ref_state, ref_step = load_state(reference_run)
    assert step == ref_step == 10
    assert_trees_equal(state, ref_state)  # params, optimizer state, EMA, rng: bit for bit
    assert not (workdir / "LOCK").exists()

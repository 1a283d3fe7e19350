"""Progressive patch training (Restormer's recipe): phase boundaries, per-phase shapes, exact resume
across and at phase boundaries."""
import csv

import jax
import numpy as np
import pytest

from iln_jax.train import train_and_evaluate
from iln_jax.train.checkpoint import load_state
from iln_jax.train.phases import phase_at, training_phases
from train_util import tiny_config

SPEC = "configs/restormer_derain.py:tiny=1"
QUIET = {"eval.every": -1, "train.diagnostics_every": 0}
# Two of the tiny config's phases keep the number of compilations (one per phase and run) down.
TWO_PHASES = {**QUIET, "progressive.gt_sizes": (16, 24), "progressive.batch_sizes": (16, 8),
              "progressive.iters": (2, 2), "train.num_steps": 4}


def test_official_phases_and_boundaries():
    c = tiny_config("configs/restormer_derain.py")
    phases = training_phases(c)
    assert [(p.first_step, p.last_step) for p in phases] == [
        (1, 92_000), (92_001, 156_000), (156_001, 204_000), (204_001, 240_000), (240_001, 276_000),
        (276_001, 300_000)]
    assert [p.gt_size for p in phases] == [128, 160, 192, 256, 320, 384]
    assert [p.batch_size for p in phases] == [64, 40, 32, 16, 8, 8]  # 8 GPUs x the per-GPU yml values
    assert phase_at(phases, 0).index == 0 and phase_at(phases, 92_000).index == 0
    assert phase_at(phases, 92_001).index == 1 and phase_at(phases, 300_000).index == 5


def test_last_phase_runs_to_num_steps_and_single_phase_configs():
    c = tiny_config(SPEC, **{"train.num_steps": 10})
    assert training_phases(c)[-1].last_step == 10
    sr = training_phases(tiny_config("configs/swinir.py:tiny=1,scale=2"))
    assert len(sr) == 1 and sr[0].patch_size == 8 and sr[0].gt_size == 16 and sr[0].last_step == 6


def test_mismatched_phase_lists_are_rejected():
    c = tiny_config(SPEC, **{"progressive.iters": (2, 2)})
    with pytest.raises(ValueError, match="one entry per phase, got 3 / 3 / 2"):
        training_phases(c)


def _params(workdir):
    state, step = load_state(workdir)
    return step, jax.tree.leaves(state["params"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("progressive")
    summary = train_and_evaluate(tiny_config(SPEC, **TWO_PHASES), workdir)
    return workdir, summary


def test_each_phase_trains_at_its_patch_size(uninterrupted):
    workdir, summary = uninterrupted
    assert summary["status"] == "completed" and summary["final_step"] == 4
    rows = list(csv.DictReader(open(workdir / "metrics_train.csv")))
    assert [(int(r["step"]), int(float(r["patch_size"]))) for r in rows] == [(2, 16), (4, 24)]
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_resume_at_and_inside_phase_boundaries_is_exact(uninterrupted, tmp_path):
    """Stopped after step 2 (the last step of phase 1) and after step 3 (inside phase 2), resumed
    each time: the parameters equal the uninterrupted run's bit for bit."""
    for stop in (2, 3, 4):
        summary = train_and_evaluate(tiny_config(SPEC, **{**TWO_PHASES, "train.num_steps": stop}), tmp_path)
        assert summary["final_step"] == stop
    step, resumed = _params(tmp_path)
    ref_step, reference = _params(uninterrupted[0])
    assert step == ref_step == 4
    for a, b in zip(resumed, reference):
        np.testing.assert_array_equal(a, b)

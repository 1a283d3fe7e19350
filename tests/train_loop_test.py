"""``train_and_evaluate`` end to end on a tiny config: outputs, auto-resume, SIGTERM, non-finite stop."""
import csv
import json
import os
import signal

import jax
import numpy as np
import pytest

from iln_jax.analysis import read_diagnostics
from iln_jax.train import NonFiniteLossError, train_and_evaluate
from iln_jax.train.checkpoint import load_state
from train_util import tiny_config

SPEC = "configs/swinir.py:tiny=1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """6 steps, checkpoints every 2 (keep 2), diagnostics every 2, validation at the end."""
    workdir = tmp_path_factory.mktemp("run")
    summary = train_and_evaluate(tiny_config(SPEC, **{"train.diagnostics_every": 2}), workdir)
    return workdir, summary


def test_outputs(run):
    workdir, summary = run
    assert summary["status"] == "completed" and summary["final_step"] == 6
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [4, 6]
    assert {p.name for p in (workdir / "checkpoints" / "6").iterdir()} >= {"state", "data", "config"}
    assert json.loads((workdir / "config.json").read_text())["name"] == "swinir_srx2_iln_tiny"
    rows = list(csv.DictReader(open(workdir / "metrics_train.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert {"loss", "grad_norm", "param_norm", "lr", "steps_per_sec"} <= set(rows[0])
    val = list(csv.DictReader(open(workdir / "metrics_val.csv")))
    assert {"baseline/psnr", "ema/psnr", "ema/ssim"} <= set().union(*(r.keys() for r in val))
    assert list((workdir / "tb").glob("events.out.tfevents.*"))
    assert list((workdir / "images" / "step_0000006").glob("*.png"))
    assert (workdir / "images" / "reference").is_dir()
    s = json.loads((workdir / "summary.json").read_text())
    assert s["baseline"]["psnr"] > 20 and np.isfinite(s["validation"]["ema"]["psnr"])


def _diagnostic_rows(workdir):
    return [json.loads(line) for line in (workdir / "diagnostics.jsonl").read_text().splitlines()]


def test_diagnostics_logged_every_k_steps(run):
    workdir, _ = run
    rows = _diagnostic_rows(workdir)
    assert [r["step"] for r in rows] == [2, 4, 6]
    history = read_diagnostics(workdir / "diagnostics.jsonl")
    depths = tiny_config(SPEC).model.kwargs.depths
    assert history["blocks"] == [f"layers_{g}/residual_group/blocks_{b}"
                                 for g, depth in enumerate(depths) for b in range(depth)]  # forward order
    for stat in ("sq_mean", "entropy", "entropy_norm", "max_abs"):
        assert history[stat].shape == (3, sum(depths)) and np.isfinite(history[stat]).all()
    assert ((history["entropy_norm"] > 0) & (history["entropy_norm"] <= 1)).all()


def test_resumes_from_workdir(run, tmp_path):
    """Re-running in the same workdir with more steps continues from the last checkpoint."""
    workdir, _ = run
    summary = train_and_evaluate(tiny_config(SPEC, **{"train.num_steps": 8, "train.diagnostics_every": 2}), workdir)
    assert summary["start_step"] == 6 and summary["final_step"] == 8
    rows = list(csv.DictReader(open(workdir / "metrics_train.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert [r["step"] for r in _diagnostic_rows(workdir)] == [2, 4, 6, 8]


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    def preempt(step, state):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    def before_the_run(signum, frame):  # the handler the caller had: the run must give it back
        raise AssertionError("SIGTERM reached the caller's handler during the run")

    config = tiny_config(SPEC, **{"train.checkpoint_every": 100})
    previous = signal.signal(signal.SIGTERM, before_the_run)
    try:
        summary = train_and_evaluate(config, tmp_path, on_step=preempt)
        assert signal.getsignal(signal.SIGTERM) is before_the_run
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert summary["status"] == "preempted" and summary["final_step"] == 3
    state, step = load_state(tmp_path)
    assert step == 3 and int(state["step"]) == 3


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    # lr x 1e30 from step 4 on: step 4's update is finite but huge, step 5's loss is not finite.
    config = tiny_config(SPEC, **{"optim.milestones": (3,), "optim.gamma": 1e36,
                                  "train.num_steps": 12, "train.checkpoint_every": 2})
    with pytest.raises(NonFiniteLossError, match=r"at step (\d+).*last good checkpoint is step (\d+)") as e:
        train_and_evaluate(config, tmp_path)
    bad_step = int(e.value.args[0].split("at step ")[1].split(" ")[0])
    state, step = load_state(tmp_path)
    assert step < bad_step and f"checkpoint is step {step} " in e.value.args[0]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def test_unknown_model_override_is_rejected():
    with pytest.raises(KeyError, match="does not exist"):
        tiny_config(SPEC, **{"model.kwargs.window": 8})


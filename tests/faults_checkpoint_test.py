"""Damaged checkpoints, changed configs and starting from another run's weights.

One 6-step base run (checkpoints 4 and 6) per module; each test damages or resumes a copy of it.
A resume that falls back from a damaged step 6 to step 4 must end bit-identical to the shared
uninterrupted reference run (``reference_run``, 10 steps).
"""
import json
import re
import shutil

import numpy as np
import pytest

from iln_jax.errors import CheckpointError, ResumeConfigError
from iln_jax.train import train_and_evaluate
from iln_jax.train.checkpoint import Checkpointer, load_state
from train_util import REFERENCE_OVERRIDES, REFERENCE_SPEC, assert_trees_equal, tiny_config

FINAL = REFERENCE_OVERRIDES["train.num_steps"]


def config(**overrides):
    return tiny_config(REFERENCE_SPEC, **{**REFERENCE_OVERRIDES, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train_and_evaluate(config(**{"train.num_steps": 6}), root / "base")
    assert sorted(p.name for p in (root / "base" / "checkpoints").iterdir()) == ["4", "6"]
    return root


@pytest.fixture
def run_copy(runs, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(runs / "base", workdir)
    return workdir


def _truncate_arrays(step_dir):
    for f in (step_dir / "state").glob("**/d/*"):
        f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])


DAMAGE = {
    "truncated array files": (_truncate_arrays, r"(array \S+ cannot be read|state/ cannot be opened) \(OUT_OF_RANGE: "),
    "deleted _METADATA": (lambda d: (d / "state" / "_METADATA").unlink(), r"state/_METADATA is missing"),
    "empty iterator JSON": (lambda d: (d / "data" / "process_0-of-1.json").write_text(""),
                            r"data/process_0-of-1.json is empty"),
    "missing iterator JSON": (lambda d: (d / "data" / "process_0-of-1.json").unlink(),
                              r"data/process_0-of-1.json is missing"),
    "missing data/": (lambda d: shutil.rmtree(d / "data"), r"its 'data' item is missing"),
    "broken config": (lambda d: (d / "config" / "metadata").write_text("{"), r"config/metadata is not valid JSON"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_newest_checkpoint_is_detected_and_set_aside(run_copy, damage):
    corrupt, message = DAMAGE[damage]
    corrupt(run_copy / "checkpoints" / "6")
    ckpt = Checkpointer(run_copy / "checkpoints", max_to_keep=2, save_every=2)
    assert ckpt.newest_complete_step() == 4
    assert (run_copy / "checkpoints" / "6").is_dir()  # nothing moved before the resume is accepted
    ckpt.set_aside_broken()
    ckpt.close()
    aside = [p for p in (run_copy / "checkpoints").iterdir() if p.name.startswith("6.corrupt-")]
    assert len(aside) == 1 and sorted(p.name for p in (run_copy / "checkpoints").iterdir() if p.name.isdigit()) == ["4"]
    assert re.search(message, (aside[0] / "WHY_SET_ASIDE.txt").read_text())


@pytest.mark.parametrize("damage", ["truncated array files", "missing data/"])
def test_resume_falls_back_to_the_newest_complete_checkpoint_exactly(reference_run, run_copy, damage, capsys):
    corrupt, message = DAMAGE[damage]
    corrupt(run_copy / "checkpoints" / "6")
    summary = train_and_evaluate(config(), run_copy)
    out = capsys.readouterr().out
    assert summary["start_step"] == 4 and summary["final_step"] == FINAL
    line = next(ln for ln in out.splitlines() if "checkpoint step 6 is unusable" in ln)
    assert re.search(message, line) and "moved to 6.corrupt-" in line, out
    assert_trees_equal(load_state(run_copy)[0], load_state(reference_run)[0])
    assert any(p.name.startswith("6.corrupt-") for p in (run_copy / "checkpoints").iterdir())


def test_no_complete_checkpoint_refuses_and_changes_nothing(run_copy):
    DAMAGE["missing data/"][0](run_copy / "checkpoints" / "6")
    DAMAGE["deleted _METADATA"][0](run_copy / "checkpoints" / "4")
    before = sorted(p.name for p in (run_copy / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match=r"no complete checkpoint in .*checkpoints \(step 6: its 'data' item is "
                                              r"missing; step 4: state/_METADATA is missing\)\. Nothing was changed"):
        train_and_evaluate(config(), run_copy)
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == before
    assert not (run_copy / "LOCK").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"model.norm": "layernorm"}, r"with a different model; changed:\n  model.kwargs.stdnorm: True -> False\n"
                                  r"  model.norm: 'iln' -> 'layernorm'\n"
                                  r"To train this config, use a new --workdir; to start it from these weights, add "
                                  r"--init_from=.*run:6"),
    ({"model.kwargs.embed_dim": 12, "data.scale": 3}, r"changed:\n  data.scale: 2 -> 3\n  model.kwargs.embed_dim: 8 -> 12\n"),
    ({"optim.grad_clip": 1.0}, r"its saved state does not fit this config's .*\n  missing \(\d+\): opt_state/"),
])
def test_resume_with_a_changed_model_refuses_before_restoring(run_copy, overrides, message):
    files = {p: p.stat().st_mtime_ns for p in run_copy.rglob("*")}
    with pytest.raises(ResumeConfigError, match=message):
        train_and_evaluate(config(**overrides), run_copy)
    assert {p: p.stat().st_mtime_ns for p in run_copy.rglob("*")} == files  # not a byte written


def test_resume_with_a_changed_schedule_is_allowed_and_logged(run_copy, capsys):
    summary = train_and_evaluate(config(**{"train.num_steps": 7, "optim.lr": 1e-4}), run_copy)
    assert summary["start_step"] == 6 and summary["final_step"] == 7
    assert "resuming step 6 with a changed config" in capsys.readouterr().out
    record = json.loads((run_copy / "config_changes.jsonl").read_text())
    assert record["step"] == 6 and record["changes"] == {"optim.lr": [2e-4, 1e-4], "train.num_steps": [6, 7]}
    assert json.loads((run_copy / "config.json").read_text())["optim"]["lr"] == 1e-4


def test_init_from_starts_a_new_run_from_the_weights(runs, tmp_path, capsys):
    """lr 0 for one step: the new run's parameters are exactly the source's at step 4."""
    new = tmp_path / "finetune"
    overrides = {"train.num_steps": 1, "optim.schedule": "constant", "optim.lr": 0.0, "model.norm": "layernorm",
                 "train.init_from": f"{runs / 'base'}:4"}
    summary = train_and_evaluate(config(**overrides), new)
    assert summary["start_step"] == 0 and summary["init_from"] == f"{runs / 'base'}:4"
    assert "model differs from" in capsys.readouterr().out
    state, step = load_state(new)
    source, _ = load_state(runs / "base", 4)
    assert step == 1 and int(state["step"]) == 1
    assert_trees_equal(state["params"], source["params"])
    assert not np.array_equal(state["opt_state"][0]["count"], source["opt_state"][0]["count"])  # fresh optimizer
    # Re-running resumes the new run; init_from is not read again.
    assert train_and_evaluate(config(**{**overrides, "train.num_steps": 2}), new)["start_step"] == 1


def test_init_from_a_different_tree_names_the_arrays(runs, tmp_path):
    with pytest.raises(CheckpointError, match=r"init_from=.*: its params do not fit this model:\n  .*shape"):
        train_and_evaluate(config(**{"model.kwargs.embed_dim": 12, "train.init_from": str(runs / "base")}),
                           tmp_path / "new")

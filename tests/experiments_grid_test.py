"""The experiment grid end to end on a tiny SwinIR: tables and figures, a SIGKILLed grid that
continues (finished runs not redone, the interrupted one resumed exactly), and runs side by side
on disjoint device sets with a user's norm."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import pytest

from iln_jax.errors import ConfigError
from iln_jax.experiments import grid
from iln_jax.train.checkpoint import load_state
from train_util import ROOT, assert_trees_equal, worker_env

TESTS = os.path.dirname(os.path.abspath(__file__))
ARGS = ["--config", "configs/swinir.py:tiny=1", "--norms", "layernorm,batchnorm", "--set", "train.num_steps=4",
        "--set", "train.diagnostics_every=2", "--set", "eval.every=-1", "--precisions", "fp16,int8"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid_reference")
    report = grid.main([*ARGS, "--out", str(out)])
    return out, report


def test_grid_writes_table1_table3_and_figures(reference):
    out, report = reference
    assert report["finished"] == ["layernorm", "batchnorm"]
    t1 = json.loads((out / "table1.json").read_text())
    assert t1["datasets"] == ["embedded"]
    assert [(r["norm"], r["mode"]) for r in t1["rows"]] == [("layernorm", "eval"), ("batchnorm", "eval"),
                                                          ("batchnorm", "train")]
    result = json.loads((out / "runs" / "batchnorm" / "grid_result.json").read_text())
    for row in t1["rows"]:  # the table holds the measured numbers
        if row["norm"] == "batchnorm":
            assert row["embedded"] == result["datasets"]["embedded"][row["mode"]]
    # running statistics after 4 steps vs each image's own: BatchNorm's two modes differ
    assert result["datasets"]["embedded"]["train"]["psnr"] != result["datasets"]["embedded"]["eval"]["psnr"]
    md = (out / "table1.md").read_text()
    assert "| batchnorm (train)" in md and "| bicubic | 31.31 / 0.9088 |" in md
    t3 = json.loads((out / "table3.json").read_text())
    assert t3["precisions"] == ["fp16", "int8"] and [r["norm"] for r in t3["rows"]] == ["layernorm", "batchnorm"]
    assert all(r["fp16"]["nonfinite_pixels"] == 0 and r["fp16"]["psnr_vs_fp32"] > 40 for r in t3["rows"])
    figures = json.loads((out / "figures.json").read_text())
    assert figures["layernorm"]["steps"] == [2, 4] and len(figures["layernorm"]["blocks"]) == 2
    assert all((out / f).stat().st_size > 0 for f in ("dynamics.png", "depth_over_training.png", "depth_profile.png"))


def test_killed_grid_continues_without_redoing_finished_runs(reference, tmp_path):
    ref_out, _ = reference
    cmd = [sys.executable, "-m", "iln_jax.experiments.grid", *ARGS, "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(jax.device_count()), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    checkpoint = tmp_path / "runs" / "batchnorm" / "checkpoints" / "2"
    deadline = time.time() + 240
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = tmp_path / "runs" / "layernorm" / "grid_result.json"
    assert finished.is_file() and not (tmp_path / "runs" / "batchnorm" / "grid_result.json").exists()
    stamp = finished.stat().st_mtime_ns

    report = grid.main([*ARGS, "--out", str(tmp_path)])
    assert report["finished"] == ["layernorm", "batchnorm"] and finished.stat().st_mtime_ns == stamp
    state, step = load_state(tmp_path / "runs" / "batchnorm")
    ref_state, _ = load_state(ref_out / "runs" / "batchnorm")
    assert step == 4
    assert_trees_equal(state, ref_state)  # the killed run resumed exactly
    assert json.loads((tmp_path / "table1.json").read_text()) == json.loads((ref_out / "table1.json").read_text())

    with pytest.raises(ConfigError, match="holds a grid with another recipe"):
        grid.main([*ARGS[:-2], "--precisions", "int4", "--out", str(tmp_path)])


def test_side_by_side_on_disjoint_devices_with_a_user_norm(tmp_path):
    cmd = [sys.executable, "-m", "iln_jax.experiments.grid", "--config", "configs/swinir.py:tiny=1",
           "--norms", "iln,user_norms:holistic_rms", "--set", "train.num_steps=2", "--set", "eval.every=-1",
           "--set", "train.diagnostics_every=0", "--precisions", "", "--device-groups", "2", "--out", str(tmp_path)]
    env = worker_env(8)
    env["PYTHONPATH"] = TESTS + os.pathsep + env["PYTHONPATH"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("iln", "user_norms_holistic_rms"):
        summary = json.loads((tmp_path / "runs" / name / "summary.json").read_text())
        assert summary["num_devices"] == 4 and summary["final_step"] == 2
    rows = json.loads((tmp_path / "table1.json").read_text())["rows"]
    assert [r["norm"] for r in rows] == ["iln", "user_norms:holistic_rms"]

"""The experiment grid end to end on a tiny SwinIR: several seeds per norm, tables (mean ± std,
i-LN's difference in units of its standard error, the non-convergence reason) and figures; a
SIGKILLed grid that continues (finished runs not redone, the interrupted one resumed exactly);
runs side by side on disjoint device sets with a user's norm and without diagnostics (nothing
claimed that was not written); and the pure pieces (seed lists, tables, convergence) on made-up
results."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from iln_jax.errors import ConfigError
from iln_jax.experiments import convergence, grid, plan, tables
from iln_jax.train.checkpoint import load_state
from train_util import ROOT, assert_trees_equal, worker_env

TESTS = os.path.dirname(os.path.abspath(__file__))
ONE_SEED = ["--config", "configs/swinir.py:tiny=1", "--norms", "layernorm,batchnorm", "--set", "train.num_steps=4",
            "--set", "train.diagnostics_every=2", "--set", "eval.every=-1", "--precisions", "fp16,int8"]
ARGS = [*ONE_SEED, "--seeds", "1", "--seeds", "layernorm=1,2"]


def written_files(stdout: str) -> list[str]:
    """The files a ``[tool] wrote DIR/: a, b, c`` line names, as paths."""
    line = next(ln for ln in stdout.splitlines() if "] wrote " in ln)
    folder, names = re.match(r"\[\w+\] wrote (\S+)/: ([^;]+)", line).groups()
    return [os.path.join(folder, n.strip()) for n in names.split(",")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid_reference")
    report = grid.main([*ARGS, "--out", str(out)])
    return out, report


def test_grid_runs_each_norm_per_seed_and_tables_mean_and_std(reference):
    out, report = reference
    assert report["finished_runs"] == [("layernorm", 1), ("batchnorm", 1), ("layernorm", 2)]  # seed by seed
    results = {}
    for norm, seed in report["finished_runs"]:
        workdir = out / "runs" / norm / f"seed{seed}"
        assert json.loads((workdir / "config.json").read_text())["seed"] == seed
        results[norm, seed] = json.loads((workdir / "grid_result.json").read_text())
        assert results[norm, seed]["seed"] == seed
    t1 = json.loads((out / "table1.json").read_text())
    assert t1["datasets"] == ["embedded"]
    rows = {(r["norm"], r["mode"]): r for r in t1["rows"]}
    assert list(rows) == [("layernorm", "eval"), ("batchnorm", "eval"), ("batchnorm", "train")]
    ln = rows["layernorm", "eval"]
    psnrs = [results["layernorm", s]["datasets"]["embedded"]["eval"]["psnr"] for s in (1, 2)]
    assert psnrs[0] != psnrs[1]  # another seed: other weights and batches
    assert ln["seeds"] == [1, 2] and ln["steps"] == 4 and ln["embedded"]["psnr"] == psnrs
    assert ln["embedded"]["psnr_mean"] == pytest.approx(np.mean(psnrs))
    assert ln["embedded"]["psnr_std"] == pytest.approx(np.std(psnrs, ddof=1))
    bn = rows["batchnorm", "train"]
    assert bn["seeds"] == [1] and bn["embedded"]["psnr_std"] is None
    assert bn["embedded"]["psnr_mean"] == results["batchnorm", 1]["datasets"]["embedded"]["train"]["psnr"]
    # running statistics after 4 steps vs each image's own: BatchNorm's two modes differ
    assert bn["embedded"]["psnr_mean"] != rows["batchnorm", "eval"]["embedded"]["psnr_mean"]
    md = (out / "table1.md").read_text()
    assert f"| layernorm | 1,2 | 4 | {np.mean(psnrs):.2f} ± {np.std(psnrs, ddof=1):.2f} /" in md
    assert "| batchnorm (train) | 1 | 4 |" in md and "| bicubic | | | 31.31 / 0.9088 |" in md
    t3 = json.loads((out / "table3.json").read_text())
    assert t3["precisions"] == ["fp16", "int8"] and [r["norm"] for r in t3["rows"]] == ["layernorm", "batchnorm"]
    assert all(r["fp16"]["nonfinite_pixels"] == 0 and r["fp16"]["psnr_vs_fp32"] > 40 for r in t3["rows"])
    assert t3["rows"][0]["fp16"]["psnr"] == pytest.approx(
        np.mean([results["layernorm", s]["precision"]["fp16"]["psnr"] for s in (1, 2)]))


def test_grid_figures_show_each_norms_first_seed_and_exist(reference):
    out, report = reference
    figures = json.loads((out / "figures.json").read_text())
    assert figures["written"] == ["dynamics.png", "depth_over_training.png", "depth_profile.png"]
    assert figures["not_written"] == {} and figures["runs_without_diagnostics"] == {}
    assert {n: r["seed"] for n, r in figures["runs"].items()} == {"layernorm": 1, "batchnorm": 1}
    assert figures["runs"]["layernorm"]["steps"] == [2, 4] and len(figures["runs"]["layernorm"]["blocks"]) == 2
    assert report["written"] == ["table1.md", "table1.json", "table3.md", "table3.json", "figures.json",
                                 *figures["written"]]
    assert all((out / f).stat().st_size > 0 for f in report["written"])


def test_analysis_names_only_files_it_wrote(reference, tmp_path, capsys):
    from iln_jax.analysis.__main__ import main as analysis_main
    out, _ = reference
    analysis_main(["--workdir", str(out / "runs" / "layernorm" / "seed2"), "--out", str(tmp_path / "a")])
    names = written_files(capsys.readouterr().out)
    assert [os.path.basename(n) for n in names] == ["depth_profile.png", "position_bias.png",
                                                    "bias_alignment.png", "dynamics.png", "analysis.json"]
    assert all(os.path.getsize(n) > 0 for n in names)
    assert sorted(os.listdir(tmp_path / "a")) == sorted(os.path.basename(n) for n in names)


def test_killed_grid_continues_without_redoing_finished_runs(reference, tmp_path):
    """The reference grid's recipe with one seed (seeds are not part of the recipe)."""
    ref_out, _ = reference
    args = ONE_SEED
    cmd = [sys.executable, "-m", "iln_jax.experiments.grid", *args, "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(jax.device_count()), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    checkpoint = tmp_path / "runs" / "batchnorm" / "seed1" / "checkpoints" / "2"
    deadline = time.time() + 240
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = tmp_path / "runs" / "layernorm" / "seed1" / "grid_result.json"
    assert finished.is_file() and not (tmp_path / "runs" / "batchnorm" / "seed1" / "grid_result.json").exists()
    stamp = finished.stat().st_mtime_ns

    report = grid.main([*args, "--out", str(tmp_path)])
    assert report["finished_runs"] == [("layernorm", 1), ("batchnorm", 1)]
    assert finished.stat().st_mtime_ns == stamp
    state, step = load_state(tmp_path / "runs" / "batchnorm" / "seed1")
    ref_state, _ = load_state(ref_out / "runs" / "batchnorm" / "seed1")
    assert step == 4
    assert_trees_equal(state, ref_state)  # the killed run resumed exactly
    rows = [r for r in json.loads((tmp_path / "table1.json").read_text())["rows"] if r["norm"] == "batchnorm"]
    assert rows == [r for r in json.loads((ref_out / "table1.json").read_text())["rows"] if r["norm"] == "batchnorm"]

    with pytest.raises(ConfigError, match="holds a grid with another recipe"):
        grid.main([*ONE_SEED[:-2], "--precisions", "int4", "--out", str(tmp_path)])


def test_side_by_side_without_diagnostics_claims_no_figure(tmp_path):
    """No --seeds: every run has the config's seed. Diagnostics off: the grid says so before
    training, writes no PNG, and its 'wrote' line names only files on disk."""
    cmd = [sys.executable, "-m", "iln_jax.experiments.grid", "--config", "configs/swinir.py:tiny=1",
           "--norms", "iln,user_norms:holistic_rms", "--set", "train.num_steps=2", "--set", "eval.every=-1",
           "--set", "train.diagnostics_every=0", "--precisions", "", "--device-groups", "2", "--out", str(tmp_path)]
    env = worker_env(8)
    env["PYTHONPATH"] = TESTS + os.pathsep + env["PYTHONPATH"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("iln", "user_norms_holistic_rms"):
        summary = json.loads((tmp_path / "runs" / name / "seed1" / "summary.json").read_text())
        assert summary["num_devices"] == 4 and summary["final_step"] == 2
    rows = json.loads((tmp_path / "table1.json").read_text())["rows"]
    assert [(r["norm"], r["seeds"]) for r in rows] == [("iln", [1]), ("user_norms:holistic_rms", [1])]
    assert "train.diagnostics_every=0 (off): the runs record no diagnostics" in done.stdout
    names = written_files(done.stdout)
    assert [os.path.basename(n) for n in names] == ["table1.md", "table1.json", "table3.md", "table3.json",
                                                    "figures.json"]
    assert all(os.path.isfile(n) for n in names) and not list(tmp_path.glob("*.png"))
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["written"] == [] and set(figures["not_written"]) == {"dynamics.png", "depth_over_training.png",
                                                                          "depth_profile.png"}
    assert "train.diagnostics_every=0 (off)" in figures["not_written"]["dynamics.png"]
    assert "[grid] not written: dynamics.png: no run recorded diagnostics" in done.stdout


def test_seed_lists(tmp_path):
    norms = ["layernorm", "iln", "rezero"]
    assert plan.parse_seeds([], norms, 7) == {n: [7] for n in norms}  # the config's seed
    assert plan.parse_seeds(["3,1,2"], norms, 7) == {n: [1, 2, 3] for n in norms}
    assert plan.parse_seeds(["1", "layernorm,iln=1,2,3"], norms, 7) == {"layernorm": [1, 2, 3], "iln": [1, 2, 3],
                                                                        "rezero": [1]}
    assert plan.parse_seeds(["iln=2", "iln=3"], norms, 1) == {"layernorm": [1], "iln": [2, 3], "rezero": [1]}
    assert plan.run_order(plan.parse_seeds(["1", "iln=1,2"], norms, 1)) == [
        ("layernorm", 1), ("iln", 1), ("rezero", 1), ("iln", 2)]
    with pytest.raises(ConfigError, match="batchnorm is not one of --norms"):
        plan.parse_seeds(["batchnorm=1"], norms, 1)
    with pytest.raises(ConfigError, match="expected non-negative integers"):
        plan.parse_seeds(["1,x"], norms, 1)
    with pytest.raises(ConfigError, match="use --seeds 3"):
        grid.main(["--config", "configs/swinir.py:tiny=1", "--out", str(tmp_path / "g"), "--set", "seed=3"])
    assert not (tmp_path / "g").exists()


def test_progress_line_counts_finished_runs_not_runs_left_for_later(tmp_path):
    runs = [plan.GridRun(n, s, tmp_path / f"{n}{s}") for n, s in
            [("layernorm", 1), ("iln", 1), ("layernorm", 2), ("iln", 2), ("layernorm", 3)]]
    for run in runs[:1]:
        run.workdir.mkdir()
        run.result_path.write_text("{}")
    wanted = {("layernorm", 1), ("iln", 1)}  # a later command with --seeds 1 on a grid planned with 3 seeds
    pending = [r for r in runs if (r.norm, r.seed) in wanted and not r.done]
    assert grid.progress_line(tmp_path, runs, wanted, pending) == (
        f"[grid] {tmp_path}: 1 of 5 planned runs finished; running 1; 3 other planned run(s) not in this "
        f"command's --seeds (layernorm seed 2, iln seed 2, layernorm seed 3)")
    assert grid.progress_line(tmp_path, runs[:2], wanted, pending) == (
        f"[grid] {tmp_path}: 1 of 2 planned runs finished; running 1")


def test_a_grid_from_before_seeds_continues_in_its_directories(tmp_path):
    recipe = {"config": "c", "set": [], "data_root": "", "datasets": "", "precisions": ""}
    (tmp_path / plan.PLAN_FILE).write_text(json.dumps({"recipe": recipe, "norms": ["layernorm", "iln"]}))
    runs = plan.record_plan(tmp_path, recipe, {"iln": [1, 2]}, default_seed=1)
    assert [(r.norm, r.seed, r.workdir.relative_to(tmp_path).as_posix()) for r in runs] == [
        ("layernorm", 1, "runs/layernorm"), ("iln", 1, "runs/iln"), ("iln", 2, "runs/iln/seed2")]
    assert plan.find_run(tmp_path, "iln", 2, 1).workdir == tmp_path / "runs" / "iln" / "seed2"


def _result(norm, seed, psnr, *, losses=(0.3, 0.1), pixels=0, diverged=None):
    m = {"psnr": psnr, "ssim": 0.5 + psnr / 100, "nonfinite_pixels": pixels}
    return {"norm": norm, "seed": seed, "final_step": 100, "diverged": diverged, "losses": list(losses),
            "loss_steps": [10, 100], "datasets": {"Set5": {"eval": m, "bicubic": {"psnr": 30.0, "ssim": 0.8}}}}


def test_table1_difference_in_units_of_its_standard_error_and_the_reason_for_a_dagger():
    ln, iln = [30.0, 30.2, 30.4], [31.0, 31.1, 31.5]
    results = [_result("layernorm", s + 1, p) for s, p in enumerate(ln)]
    results += [_result("iln", s + 1, p, losses=(0.3, 0.31) if s == 1 else (0.3, 0.1)) for s, p in enumerate(iln)]
    results.append(_result("rezero", 1, 30.5))
    md, data = tables.table1(results)
    diff = data["iln_minus"][0]
    assert diff["other"] == "layernorm" and diff["seeds_iln"] == [1, 2, 3]
    se = math.sqrt(np.var(iln, ddof=1) / 3 + np.var(ln, ddof=1) / 3)
    assert diff["Set5"]["diff"] == pytest.approx(np.mean(iln) - np.mean(ln))
    assert diff["Set5"]["std"] == pytest.approx(se) and diff["Set5"]["z"] == pytest.approx(diff["Set5"]["diff"] / se)
    assert f"| layernorm | 3 / 3 | +{np.mean(iln) - np.mean(ln):.2f} ± {se:.2f} (+" in md
    assert data["iln_minus"][1]["Set5"]["std"] is None and "σ_Δ needs >= 2 seeds each" in md  # rezero: one seed
    row = next(r for r in data["rows"] if r["norm"] == "iln")
    assert not row["converged"] and row["not_converged"] == [
        {"seed": 2, "reasons": ["training loss did not decrease: last logged 0.31 (step 100) >= first logged 0.3 "
                                "(step 10)"]}]
    assert "| iln † | 1,2,3 |" in md and "- † iln, seed 2: training loss did not decrease" in md
    assert row["Set5"]["psnr_mean_minus_bicubic"] == pytest.approx(np.mean(iln) - 30.0)


def test_convergence_reasons_name_the_test_and_its_numbers():
    assert convergence.failures(_result("iln", 1, 30.0)) == []
    message = ("Non-finite training loss at step 57 (loss=nan, grad_norm=inf; the first non-finite one of "
               "steps 51-60, whose metrics were fetched together); stopping. Lower optim.lr")
    bad = _result("iln", 1, float("nan"), pixels=12, diverged=message, losses=(0.3, float("nan")))
    assert convergence.failures(bad) == [
        "non-finite training loss at step 57 (loss nan, gradient norm inf)",
        "last logged training loss (step 100) is nan", "PSNR on Set5 is nan", "12 non-finite output pixels on Set5"]
    assert convergence.failures({"norm": "x", "datasets": {}, "load_error": "no checkpoint"}) == [
        "no measurements (weights could not be loaded: no checkpoint)"]

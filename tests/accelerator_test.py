"""bench/accelerator.py: the dry run exercises every path the accelerator run takes (device section,
goldens with and without the parity setting, both models in both dtypes and norms, the PyTorch step
through the stand-in, cuDNN reported unavailable, MFU without a known peak) and writes the report;
a section that overruns its deadline is killed and keeps what it wrote."""
import importlib
import json
import subprocess
import sys
import time

import pytest

from train_util import ROOT, worker_env

sys.path.insert(0, str(ROOT / "bench"))
accelerator = importlib.import_module("accelerator")
sections = importlib.import_module("accelerator_sections")
report_lib = importlib.import_module("accelerator_report")


def _env() -> dict:
    return worker_env(1)  # XLA's optimisation passes off, as in the rest of the suite: it checks paths, not speed


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    # a generous budget: the test checks the paths, not that a loaded CI machine fits in 8 minutes
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "accelerator.py"), "--dry-run", "--out-dir", str(out),
                           "--budget-s", "1500"], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=1700)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_dry_run_writes_the_report(dry_run):
    out, stdout = dry_run
    path = out / "accelerator_cpu_dry_run.json"
    assert f"wrote {path} and {out / 'accelerator_cpu_dry_run.md'}" in stdout
    doc = json.loads(path.read_text())
    assert doc["partial"] is False and doc["dry_run"] is True
    assert [(s["name"], s["status"]) for s in doc["sections"]] == [
        ("device", "done"), ("model:swinir-m", "done"), ("model:hat", "done")]
    assert doc["device"]["platform"] == "cpu" and doc["device"]["defaults"]["jax_default_matmul_precision"] is None
    assert {(g["framework"].split()[0], g["dtype"], g["precision"]) for g in doc["gemm"]} >= {
        ("jax", "float32", "default"), ("jax", "float32", "highest"), ("jax", "bfloat16", "default"),
        ("torch", "float32", "default")}
    markdown = (out / "accelerator_cpu_dry_run.md").read_text()
    assert "| model | dtype | precision | norm | impl |" in markdown and "dry run" in markdown


def test_dry_run_checks_the_goldens_both_ways(dry_run):
    doc = json.loads((dry_run[0] / "accelerator_cpu_dry_run.json").read_text())
    checks = {(g["check"], g["name"], g["precision"]): g for g in doc["goldens"]}
    assert set(checks) == {("forward", "hat_iln_sr_x2", "highest"), ("grad", "swinir_dn_3conv", "highest"),
                           ("forward", "hat_iln_sr_x2", "default")}
    assert all(g["passed"] for g in checks.values()), checks
    assert doc["goldens_summary"]["highest"] == {"checks": 2, "passed": 2, "failed": [], "skipped": 0}


def test_dry_run_times_every_planned_configuration(dry_run):
    doc = json.loads((dry_run[0] / "accelerator_cpu_dry_run.json").read_text())
    rows = {(r["model"], r["impl"], r["compute_dtype"], r["norm"], r["attention_impl"], r["matmul_precision"]): r
            for r in doc["train_steps"]}
    for model, plan in sections.DRY_PLANS.items():
        for cfg in plan:
            row = rows[(model, "jax", cfg.dtype, cfg.norm, cfg.attention, cfg.precision or "default")]
            if cfg.attention == "cudnn":
                assert row["status"] == "unavailable" and "CUDA GPU" in row["note"]
                continue
            assert row["status"] == "ok", row
            assert row["compile_s"] > 0 and row["ms_per_step"] > 0 and row["model_flops_per_step"] > 0
            assert row["mfu"] is None and "no peak FLOP/s known for 'cpu'" in row["mfu_note"]
    torch_rows = [r for r in doc["train_steps"] if r["impl"] == "torch"]
    timed = [r for r in torch_rows if r["status"] == "ok"]
    assert {(r["model"], r["compute_dtype"], r["norm"]) for r in timed} == {
        ("swinir-m", "float32", "layernorm"), ("hat", "bfloat16", "layernorm"), ("hat", "float32", "iln")}
    assert all(r["standin"] and "official_standin" in r["note"] and r["global_batch"] == 1 for r in timed)
    assert any("bfloat16" in r["impl_detail"] for r in timed)  # autocast
    missing = [r for r in torch_rows if r["status"] != "ok"]  # SwinIR has no official i-LN class
    assert [(r["model"], r["norm"], r["status"]) for r in missing] == [("swinir-m", "iln", "unavailable")]
    assert all("vs_torch" in rows[("hat", "jax", r["compute_dtype"], r["norm"], "xla", "default")] for r in timed
               if r["model"] == "hat")


def test_a_section_past_its_deadline_is_killed_and_keeps_its_rows(tmp_path):
    rows = tmp_path / "rows.jsonl"
    script = (f"import json, time; f = open({str(rows)!r}, 'a'); f.write(json.dumps({{'kind': 'step', 'n': 1}}) + "
              f"'\\n'); f.flush(); f.write('{{\"cut'); f.flush(); time.sleep(60)")
    t0 = time.time()
    status, records = accelerator.run_process([sys.executable, "-c", script], worker_env(1), rows, time.time() + 3)
    assert time.time() - t0 < 20
    assert status == "stopped at the time budget" and records == [{"kind": "step", "n": 1}]


def test_plan_puts_what_both_frameworks_have_first():
    plan = sections.plan(["layernorm", "iln"], ["float32", "bfloat16"])
    assert plan[0] == sections.Config("float32", "layernorm", "xla")
    assert [c.norm for c in plan[:4]] == ["layernorm"] * 4 and plan[-1].precision == "highest"
    assert sections.cudnn_unavailable("gpu", "bfloat16", 30).endswith("(this model's: 30)")
    assert "float32" in sections.cudnn_unavailable("gpu", "float32", 32)
    assert sections.cudnn_unavailable("gpu", "bfloat16", 32) is None


def test_report_file_names():
    assert report_lib.device_slug({"device_kind": "NVIDIA H200", "platform": "gpu", "device_count": 1}, False) \
        == "nvidia_h200"
    assert report_lib.device_slug({"device_kind": "TPU v5 lite", "platform": "tpu", "device_count": 8}, False) \
        == "tpu_v5_lite_x8"
    assert report_lib.device_slug(None, True) == "unknown_dry_run"

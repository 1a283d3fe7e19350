"""bench/roofline.py at CPU-test sizes: model FLOPs, XLA's and PyTorch's counts, GFLOP/s and the
fraction of the measured GEMM peak are reported (no timing is asserted)."""
import importlib
import json
import sys

from train_util import ROOT

sys.path.insert(0, str(ROOT / "bench"))
roofline = importlib.import_module("roofline")
official_standin = importlib.import_module("official_standin")


def test_tiny_roofline_reports_flops_and_fractions(tmp_path, capsys):
    checkout = official_standin.write_checkout(tmp_path / "official")
    out = tmp_path / "roofline.json"
    roofline.main(["--tiny", "--models", "swinir-m", "--torch-ref", str(checkout), "--steps", "1", "--rounds", "1",
                   "--warmup", "0", "--json", str(out)])
    report = json.loads(out.read_text())
    assert set(report["gemm_peaks"]) == {"jax", "torch"} and report["gemm_n"] == 256
    jax_row, torch_row = report["rows"]
    assert (jax_row["framework"], torch_row["framework"]) == ("jax", "torch")
    assert jax_row["model_gflop_per_step"] > 0 and jax_row["xla_gflop_per_step"] > 0
    assert torch_row["torch_counted_gflop_per_step"] is not None
    for row in report["rows"]:
        assert row["achieved_gflops_per_s"] > 0 and 0 < row["fraction_of_machine_peak"]
        assert row["fraction_of_own_gemm_peak"] > 0
    assert jax_row["speed_vs_torch"] > 0
    assert "of own peak" in capsys.readouterr().out

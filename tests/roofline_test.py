"""bench/roofline.py at CPU-test sizes: model FLOPs, XLA's and PyTorch's counts, GFLOP/s and the
fraction of the measured GEMM peak are reported (no timing is asserted), with the rounds interleaved
and with PyTorch's step in a process of its own (``--sequential``)."""
import importlib
import json
import sys

from train_util import ROOT

sys.path.insert(0, str(ROOT / "bench"))
roofline = importlib.import_module("roofline")
official_standin = importlib.import_module("official_standin")


def _report(tmp_path, checkout, *extra) -> dict:
    out = tmp_path / "roofline.json"
    roofline.main(["--tiny", "--models", "swinir-m", "--torch-ref", str(checkout), "--steps", "1", "--rounds", "1",
                   "--warmup", "0", "--model-kwargs", '{"remat_policy": "dots"}', "--json", str(out), *extra])
    return json.loads(out.read_text())


def test_tiny_roofline_reports_flops_and_fractions(tmp_path, capsys):
    checkout = official_standin.write_checkout(tmp_path / "official")
    reports = {order: _report(tmp_path, checkout, *flags) for order, flags in
               (("interleaved", ()), ("sequential", ("--sequential",)))}
    for report in reports.values():
        assert set(report["gemm_peaks"]) == {"jax", "torch"} and report["gemm_n"] == 256
        jax_row, torch_row = report["rows"]
        assert (jax_row["framework"], torch_row["framework"]) == ("jax", "torch")
        assert jax_row["model_gflop_per_step"] > 0 and jax_row["xla_gflop_per_step"] > 0
        assert torch_row["torch_counted_gflop_per_step"] is not None
        assert jax_row["model_options"] == {"remat_policy": "dots"}
        for row in report["rows"]:
            assert row["achieved_gflops_per_s"] > 0 and 0 < row["fraction_of_machine_peak"]
            assert row["fraction_of_own_gemm_peak"] > 0
        assert jax_row["speed_vs_torch"] > 0
    # The separate PyTorch process got the same weights, batch and JAX output (the stand-in's output is
    # not the network's, but it is a function of all three).
    diffs = [r["rows"][1]["forward_max_abs_diff_vs_jax"] for r in reports.values()]
    assert diffs[0] == diffs[1]
    assert "of own peak" in capsys.readouterr().out

"""iln_jax.parity: the full-precision setting reaches both frameworks and the traced programs, and the
golden reports (which the tests and bench/accelerator.py assert on) fail when the port is wrong."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden
from iln_jax import parity
from iln_jax.parity import goldens


def _lowered_matmul() -> str:
    x = jnp.ones((8, 8), jnp.float32)
    return jax.jit(lambda a, b: a @ b).lower(x, x).as_text()


def test_full_precision_reaches_the_traced_program():
    with jax.default_matmul_precision(None):  # the frameworks' default (what a user gets without the setting)
        default = _lowered_matmul()
        with parity.full_precision():
            full = _lowered_matmul()
            assert parity.precision_settings()["jax_default_matmul_precision"] == "highest"
        assert parity.precision_settings()["jax_default_matmul_precision"] is None
    assert "HIGHEST" in full and "HIGHEST" not in default


def test_full_precision_turns_torch_tf32_off_and_restores_it():
    torch = pytest.importorskip("torch")
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, True
    try:
        with parity.full_precision():
            assert parity.precision_settings()["torch"] == {"cuda.matmul.allow_tf32": False, "cudnn.allow_tf32": False}
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_set_parity_precision_is_process_wide():
    torch = pytest.importorskip("torch")
    before = (jax.config.jax_default_matmul_precision, torch.backends.cudnn.allow_tf32)
    jax.config.update("jax_default_matmul_precision", None)
    torch.backends.cudnn.allow_tf32 = True
    try:
        parity.set_parity_precision()
        assert jax.config.jax_default_matmul_precision == "highest"
        assert torch.backends.cudnn.allow_tf32 is False
    finally:
        jax.config.update("jax_default_matmul_precision", before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def _copy_golden(tmp_path, name, *, grad=False):
    shutil.copy(golden.DATA / f"{name}.npz", tmp_path / f"{name}.npz")
    if grad:
        (tmp_path / "golden_grad").mkdir()
        shutil.copy(golden.DATA / "golden_grad" / f"{name}_grad.npz", tmp_path / "golden_grad" / f"{name}_grad.npz")


def _rewrite(path, **changes):
    arrays = dict(np.load(path))
    arrays.update(changes)
    np.savez(path, **arrays)


def test_forward_report_passes_the_port_and_fails_a_wrong_output(tmp_path):
    name = "swinir_sr_x2_pixelshuffle"
    ok = goldens.forward_report(name)
    assert ok["passed"] and ok["relative_error"] < 1e-5
    _copy_golden(tmp_path, name)
    out = np.load(tmp_path / f"{name}.npz")["output"]
    _rewrite(tmp_path / f"{name}.npz", output=out * np.float32(1.001))  # a 1e-3 relative error, TF32's size
    bad = goldens.forward_report(name, tmp_path)
    assert not bad["passed"] and "relative error" in bad["failures"][0]


def test_grad_report_names_the_tensor_that_is_wrong(tmp_path):
    name = "swinir_dn_3conv"
    _copy_golden(tmp_path, name, grad=True)
    path = tmp_path / "golden_grad" / f"{name}_grad.npz"
    key = "grad/conv_first.weight"
    _rewrite(path, **{key: np.load(path)[key] * np.float32(1.5)})
    report = goldens.grad_report(name, "unrolled", tmp_path)
    assert not report["passed"]
    assert report["grad_worst"] == "conv_first.weight" and "conv_first.weight" in report["failures"][0]
    assert json.dumps(report)  # a report is plain JSON (bench/accelerator.py writes it)


def test_a_missing_golden_file_is_named():
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        goldens.forward_report("nope")

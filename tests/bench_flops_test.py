"""bench/flops.py (model FLOPs from the step's jaxpr) and bench/peaks.py (device peaks for MFU)."""
import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax.layers.linear import linear
from train_util import ROOT, tiny_config

sys.path.insert(0, str(ROOT / "bench"))
flops = importlib.import_module("flops")
peaks = importlib.import_module("peaks")


def _count(fn, *args) -> int:
    closed = jax.make_jaxpr(fn)(*args)
    return flops.jaxpr_matmul_flops(flops._without_dead_code(closed.jaxpr))


def test_a_linear_layer_and_its_gradients():
    x, k, b = jnp.ones((4, 10, 16)), jnp.ones((16, 32)), jnp.zeros(32)
    forward = 2 * 40 * 16 * 32
    loss = lambda x, k, b: jnp.sum(linear(x, k, b) ** 2)  # noqa: E731
    assert _count(loss, x, k, b) == forward
    assert _count(jax.grad(loss, argnums=(0, 1)), x, k, b) == 3 * forward
    # the input's gradient is dead code when only the kernel's is asked for, as in a model's first layer
    assert _count(jax.grad(loss, argnums=1), x, k, b) == 2 * forward


def test_a_scan_counts_its_body_length_times():
    w = jnp.ones((8, 8))

    def body(h, _):
        return h @ w, None

    assert _count(lambda h: jax.lax.scan(body, h, None, length=5)[0], jnp.ones((3, 8))) == 5 * 2 * 3 * 8 * 8


def test_matches_pytorchs_flop_counter_on_the_same_network():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    conv_w = np.random.default_rng(1).standard_normal((8, 3, 3, 3)).astype(np.float32)
    lin_w = np.random.default_rng(2).standard_normal((8, 5)).astype(np.float32)

    def jax_loss(conv_w, lin_w, x):
        y = jax.lax.conv_general_dilated(x, conv_w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jnp.sum(jnp.einsum("bchw,cd->bhwd", y, lin_w) ** 2)

    ours = _count(jax.grad(jax_loss, argnums=(0, 1)), conv_w, lin_w, x)
    tw, tl = (torch.tensor(v, requires_grad=True) for v in (conv_w, lin_w))
    with FlopCounterMode(display=False) as counter:
        y = torch.nn.functional.conv2d(torch.tensor(x), tw, padding=1)
        (torch.einsum("bchw,cd->bhwd", y, tl) ** 2).sum().backward()
    assert ours == counter.get_total_flops()


def test_model_flops_do_not_depend_on_remat_or_dtype():
    base = flops.step_model_flops(tiny_config())
    assert base > 0
    other = tiny_config(**{"model.kwargs.remat_policy": "block", "train.compute_dtype": "bfloat16"})
    assert flops.step_model_flops(other) == base
    wider = tiny_config(**{"data.batch_size": 16})
    assert flops.step_model_flops(wider) == 2 * base


@pytest.mark.parametrize("kind, arithmetic, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.5), ("NVIDIA H100 PCIe", "bf16", 756.5), ("NVIDIA H200", "tf32", 494.5),
    ("NVIDIA H200 NVL", "bf16", 835.5), ("NVIDIA A100-SXM4-80GB", "fp32", 19.5), ("NVIDIA L4", "bf16", 121.0),
    ("TPU v4", "bf16", 275.0), ("TPU v5 lite", "bf16", 197.0), ("TPU v5", "bf16", 459.0),
    ("TPU v5p", "bf16", 459.0), ("TPU v6 lite", "bf16", 918.0)])
def test_device_peaks(kind, arithmetic, tflops):
    assert peaks.device_peaks(kind)[arithmetic] == pytest.approx(tflops * 1e12)


def test_unknown_devices_have_no_peak():
    for kind in ("cpu", "NVIDIA L40S", "TPU v4 lite", "NVIDIA GeForce RTX 4090"):
        assert peaks.device_peaks(kind) is None
    peak, note = peaks.peak_flops("cpu", "cpu", "float32", None)
    assert peak is None and "MFU not computed" in note


def test_the_peak_follows_the_steps_arithmetic():
    h100 = "NVIDIA H100 80GB HBM3"
    assert peaks.peak_flops(h100, "gpu", "float32", None)[0] == pytest.approx(494.5e12)  # JAX's default: TF32
    assert peaks.peak_flops(h100, "gpu", "float32", "highest")[0] == pytest.approx(67e12)
    assert peaks.peak_flops(h100, "gpu", "bfloat16", None)[0] == pytest.approx(989.5e12)
    assert peaks.peak_flops("TPU v5 lite", "tpu", "float32", None)[0] == pytest.approx(197e12)  # one bf16 pass
    assert peaks.peak_flops("TPU v5 lite", "tpu", "float32", "highest")[0] is None

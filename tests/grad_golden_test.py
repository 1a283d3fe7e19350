"""Training parity with the official PyTorch models: loss, gradients, two Adam steps and the EMA.

``tests/data/golden_grad/`` (README there) holds, for the models of the forward goldens, the official
L1 loss and gradient at the golden weights and input, the parameters after one and two
``torch.optim.Adam`` steps (BasicSR's settings) and the EMA (0.999) after them. The port's side is this
project's own ``train_step`` with the optimizer that ``config.optim`` builds; every tensor is held to
its own scale, steps and EMA through their moves from the start. The comparison is
``iln_jax.parity.goldens.grad_report`` (the accelerator benchmark runs the same on a device).

HINT: ``hint_faithful`` is the official model (every training forward starts without the cross-call
cache, as the port's stateless step does); ``hint_corrected`` is the corrected design written on the
official modules in PyTorch (``scripts/golden_hint_corrected.py``). ``restormer_biasfree`` is the
official Restormer with ExDA's options off; ExDA itself has no official code to compare with.

The checks run in each model execution mode (``scan_layers`` x ``remat_policy``): they change how the
network is traced and differentiated, never what it computes. The SR models and the shared Restormer
run in all four (``scan_remat_test`` adds every remat policy on the SR models); the goldens made here
in fewer, as a U-Net compiles slowly: each HINT design in one mode (the official one unrolled, the
corrected one scanned and rematerialised; the designs differ in the channel ranking and the cache,
not in how blocks are stacked), Restormer without bias unrolled.
"""
import pytest

import golden
from iln_jax.parity import goldens

GRAD_DIR = golden.DATA / "golden_grad"
EVERY_MODE = list(goldens.FORWARD_NAMES)
CASES = ([(name, mode) for name in EVERY_MODE for mode in goldens.MODES]
         + [("hint_faithful", "unrolled"), ("hint_corrected", "scanned+remat"),
            ("restormer_biasfree", "unrolled")])
UNETS = ("restormer", "hint")  # slow to compile: the slow tier (tests/README.md)


@pytest.mark.parametrize("name,mode", [pytest.param(n, m, id=f"{n}-{m}", marks=[pytest.mark.slow] if n.startswith(UNETS) else [])
                                       for n, m in CASES])
def test_gradients_two_adam_steps_and_ema_match_official(name, mode):
    report = goldens.grad_report(name, mode, golden.DATA)
    assert report["passed"], f"{len(report['failures'])} tensors off:\n" + "\n".join(report["failures"][:20])

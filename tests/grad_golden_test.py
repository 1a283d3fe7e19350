"""Training parity with the official PyTorch models: gradients, two Adam steps and the EMA.

``tests/data/golden_grad/`` (from ``../shared/golden_grad``; README there) holds, for the models of the
forward goldens, the official L1 loss and gradient at the golden weights and input, the parameters after
one and two ``torch.optim.Adam`` steps (BasicSR's settings) and the EMA (0.999) after them. The port's
gradients come from ``jax.value_and_grad`` of the same loss; the steps come from this project's own
``train_step`` with the optimizer that ``config.optim`` builds, so the test covers the code that trains.
The comparison and its tolerances are ``iln_jax.parity.goldens.grad_report``.

Every check runs for each model execution mode (``scan_layers`` x ``remat_policy``): they change how
the network is traced and differentiated, never what it computes.
"""
import pytest

import golden
from iln_jax.parity import goldens


@pytest.mark.parametrize("mode", list(goldens.MODES))
@pytest.mark.parametrize("name", goldens.FORWARD_NAMES)
def test_gradients_two_adam_steps_and_ema_match_official(name, mode):
    report = goldens.grad_report(name, mode, golden.DATA)
    assert report["passed"], "; ".join(report["failures"])

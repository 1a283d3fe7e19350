"""Checkpoints name their variable layout; a run resumed (or started with ``init_from``) with the
other ``scan_layers`` converts the state and continues the same run."""
import jax
import numpy as np

from iln_jax.models import scan_layout
from iln_jax.train import build_model, train_and_evaluate
from iln_jax.train.checkpoint import load_config, load_state
from train_util import tiny_config

# Two identical groups of two blocks: both the groups and the block pairs are scanned.
SPEC = "configs/swinir.py:tiny=1"
OVERRIDES = {"train.num_steps": 4, "train.checkpoint_every": 2, "eval.every": -1, "train.diagnostics_every": 0,
             "model.kwargs.depths": (2, 2), "model.kwargs.num_heads": (2, 2),
             # scanned layers draw their drop-path masks from split keys: without drop-path both
             # layouts compute the same run (up to float round-off)
             "model.kwargs.drop_path_rate": 0.0}


def _config(**extra):
    return tiny_config(SPEC, **{**OVERRIDES, **extra})


def _unrolled_params(config, state):
    return scan_layout.params_to_unrolled(build_model(config), state["params"])


def test_resuming_with_the_other_layout_converts_the_state_and_continues(tmp_path, capsys):
    reference = tmp_path / "reference"
    train_and_evaluate(_config(), reference)  # unrolled, uninterrupted
    ref_state, _ = load_state(reference)

    run = tmp_path / "run"
    train_and_evaluate(_config(**{"train.num_steps": 2}), run)  # unrolled, steps 1-2
    assert load_config(run)["model"]["kwargs"]["scan_layers"] is False  # the layout is named
    scanned = _config(**{"model.kwargs.scan_layers": True})
    summary = train_and_evaluate(scanned, run)  # scanned, steps 3-4
    assert summary["start_step"] == 2 and summary["final_step"] == 4
    assert "holds the unrolled layout: converted to the scanned one" in capsys.readouterr().out
    state, _ = load_state(run)
    assert "layers" in state["params"] and "layers_0" not in state["params"]
    ours = np.concatenate([np.ravel(a) for a in jax.tree.leaves(_unrolled_params(scanned, state))])
    ref = np.concatenate([np.ravel(a) for a in jax.tree.leaves(ref_state["params"])])
    diff = np.abs(ours - ref)
    # Adam's first steps move every weight by ~lr = 2e-4 in the direction of its gradient's sign: the
    # weights whose gradient is at round-off level may step the other way; all others agree.
    assert np.mean(diff <= 1e-6) > 0.99 and diff.max() <= 4 * 2e-4 * 4
    # Adam's moments were converted with the parameters: the optimizer continued, not restarted.
    assert int(np.asarray(jax.tree.leaves(state["opt_state"])[0]).reshape(-1)[0]) == 4


def test_init_from_a_run_of_the_other_layout(tmp_path):
    source = tmp_path / "source"
    train_and_evaluate(_config(**{"model.kwargs.scan_layers": True, "train.num_steps": 2}), source)
    target = _config(**{"train.init_from": str(source), "train.num_steps": 1})
    train_and_evaluate(target, tmp_path / "target")
    saved, _ = load_state(source)
    source_params = scan_layout.params_to_unrolled(build_model(_config(**{"model.kwargs.scan_layers": True})),
                                                   saved["params"])
    started, _ = load_state(tmp_path / "target")
    # one step away from the source weights (the unrolled target's layout), not from a fresh init
    diffs = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(started["params"]),
                                                         jax.tree.leaves(source_params))]
    assert max(diffs) < 1e-2

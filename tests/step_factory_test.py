"""The step factory: ``train.py``'s loop and ``bench/train_step.py`` compile the same program, and
``init_state(params=...)`` starts from given weights."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax.train import DataParallel, build_model, make_step, train_and_evaluate
from train_util import ROOT, tiny_config

# mixup on and a seed other than 0: the two things the benchmark's own copy of the step got wrong
OVERRIDES = {"train.num_steps": 1, "eval.every": -1, "train.diagnostics_every": 0, "seed": 7,
             "mixing.mixup": True, "train.progress_bar": False}


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_train_step", ROOT / "bench" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lowered_steps(monkeypatch):
    """The text of every ``train_step`` program lowered while the fixture is active."""
    texts = []
    original = jax.stages.Lowered.compile

    def compile_and_record(self, *args, **kwargs):
        text = self.as_text()
        if "train_step" in text.split("\n", 1)[0]:
            texts.append(text)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(jax.stages.Lowered, "compile", compile_and_record)
    return texts


def test_bench_and_train_loop_compile_the_same_step(tmp_path, lowered_steps):
    config = tiny_config(**OVERRIDES)
    train_and_evaluate(config, tmp_path / "run")
    assert len(lowered_steps) == 1, "the loop compiles its step once"
    bench = _bench_module()
    c = tiny_config(**OVERRIDES)
    bench.time_jax(c, steps=0, warmup=0)
    assert len(lowered_steps) == 2, "the bench compiles one step"
    loop_text, bench_text = lowered_steps
    assert bench_text == loop_text


def test_bench_differs_when_the_config_differs(lowered_steps):
    """The comparison above can fail: another mixing setting is another program."""
    bench = _bench_module()
    bench.time_jax(tiny_config(**OVERRIDES), steps=0, warmup=0)
    bench.time_jax(tiny_config(**{**OVERRIDES, "mixing.mixup": False}), steps=0, warmup=0)
    assert lowered_steps[0] != lowered_steps[1]


def test_init_state_from_given_params_starts_optimizer_and_ema_there():
    config = tiny_config(**OVERRIDES)
    model = build_model(config)
    init_state, step_fn = make_step(config, model, DataParallel("mesh", devices=jax.devices()[:1]))
    fresh = init_state()
    params = jax.tree.map(lambda p: np.asarray(p) + 0.5, jax.device_get(fresh.params))
    state = init_state(params=params)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), want)
    for got, want in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert all(float(jnp.abs(m).max()) == 0.0 for m in jax.tree.leaves(state.opt_state) if m.ndim)
    np.testing.assert_array_equal(np.asarray(state.rng), np.asarray(fresh.rng))  # the seeded step rng
    with pytest.raises(ValueError, match="parameter tree"):
        init_state(params={"not": np.zeros(3)})

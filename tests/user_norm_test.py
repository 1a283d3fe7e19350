"""Bring your own norm: norms defined in tests/user_norms.py (outside the package) by import path.

One stateful user norm (``train``/``axis_name`` fields, its own ``norm_stats`` collection, a
learnable branch scale) trains through ``train.py``, resumes exactly, evaluates and runs the
diagnostics; under pmap it receives the device axis. The other forms (function, NormSpec,
registered name), scan_layers, the converter's refusal and the one-line errors are checked on the
model directly.
"""
import functools
import json
import os
import signal
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax import convert, models
from iln_jax.errors import ConfigError
from iln_jax.layers import norm_registry
from iln_jax.models import scan_layout
from iln_jax.train import train_and_evaluate
from iln_jax.train.checkpoint import load_state
from train_util import ROOT, assert_trees_close, assert_trees_equal, tiny_config, worker_env

SPEC = "configs/swinir.py:tiny=1"
NORM = "user_norms:RunningRMSNorm"
RUN = {"model.norm": NORM, "train.num_steps": 4, "train.max_to_keep": 3, "train.diagnostics_every": 2,
       "eval.every": 4, "eval.save_images": 0}
TESTS = os.path.dirname(os.path.abspath(__file__))
KW = dict(img_size=8, embed_dim=8, depths=(2,), num_heads=(2,), window_size=4, upscale=2,
          upsampler="pixelshuffledirect")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 4-step run with the user norm (jit over the 8-device mesh)."""
    workdir = tmp_path_factory.mktemp("user_norm_reference")
    summary = train_and_evaluate(tiny_config(SPEC, **RUN), workdir)
    return workdir, summary


def test_user_norm_trains_resumes_exactly_through_train_py_and_evaluates(reference, tmp_path):
    ref_dir, ref_summary = reference

    def preempt(step, state):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    assert train_and_evaluate(tiny_config(SPEC, **RUN), tmp_path, on_step=preempt)["status"] == "preempted"

    args = [sys.executable, "train.py", f"--config={SPEC}", f"--workdir={tmp_path}"]
    args += [f"--config.{k}={v}" for k, v in RUN.items()]
    env = worker_env(jax.device_count())
    env["PYTHONPATH"] = TESTS + os.pathsep + env["PYTHONPATH"]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"norm={NORM}" in done.stdout

    state, step = load_state(tmp_path)
    ref_state, ref_step = load_state(ref_dir)
    assert step == ref_step == 4
    assert_trees_equal(state, ref_state)  # resumed == uninterrupted, the norm's statistics included

    init = jax.device_get(models.create("swinir", norm=NORM, **_tiny_kwargs()).init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    stats = ref_state["model_state"]["norm_stats"]
    assert set(ref_state["model_state"]) == {"norm_stats"}
    assert not np.allclose(stats["patch_embed"]["norm"]["ms"], init["norm_stats"]["patch_embed"]["norm"]["ms"])
    # The learnable branch scale of every block norm is trained (the outer slots have no branch).
    gains = [v for p, v in flax.traverse_util.flatten_dict(ref_state["params"]).items()
             if p[-1] == "branch_gain" and p[-2] in ("norm1", "norm2")]
    assert len(gains) == 4 and all(not np.allclose(g, 0.5) for g in gains)
    assert np.isfinite(ref_summary["validation"]["ema"]["psnr"])  # evaluated at the last step
    rows = [json.loads(line) for line in (ref_dir / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]

    from iln_jax.analysis.__main__ import main as analysis_main
    result = analysis_main(["--workdir", str(ref_dir), "--out", str(tmp_path / "analysis"), "--crop", "32"])
    assert result["blocks"] and np.isfinite(result["max_abs_feature"])


def test_user_norm_under_pmap_gets_the_device_axis(reference, tmp_path):
    """pmap: 8 devices x 1 example each; the statistics equal the mesh run's (global batch) only if
    the norm averaged them over the device axis (the parameters differ a little: drop-path draws
    differ between the modes, see iln_jax/train/parallel.py)."""
    ref_dir, _ = reference
    train_and_evaluate(tiny_config(SPEC, **{**RUN, "train.num_steps": 2, "train.parallel": "pmap",
                                            "eval.every": -1, "train.diagnostics_every": 0}), tmp_path)
    state, _ = load_state(tmp_path, 2)
    ref_state, _ = load_state(ref_dir, 2)
    assert_trees_close(state["model_state"], ref_state["model_state"], rtol=1e-4, atol=1e-6)


def _tiny_kwargs():
    c = tiny_config(SPEC)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in c.model.kwargs.to_dict().items()}


@pytest.mark.parametrize("norm", ["user_norms:holistic_rms", "user_norms:SCALED", "registered_rms"])
def test_user_norm_forms_scan_like_unrolled(norm):
    """A function, a NormSpec, a registered name: each builds, trains a step's forward with its state
    and gives the same output scanned (scan_layers=True) as unrolled."""
    norm_registry.register_norm("registered_rms", norm_registry.resolve_norm("user_norms:RunningRMSNorm").branch)
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
    kw = dict(KW, depths=(2, 2), num_heads=(2, 2), drop_path_rate=0.0)  # scanned draws differ
    unrolled = models.create("swinir", norm=norm, **kw)
    scanned = models.create("swinir", norm=norm, scan_layers=True, **kw)
    variables = unrolled.init(jax.random.key(0), x)
    state = [c for c in variables if c != "params"]
    apply = functools.partial(unrolled.apply, train=True, mutable=state, rngs={"dropout": jax.random.key(2)})
    y, updated = apply(variables, x)
    ys, updated_s = scanned.apply(scan_layout.to_scanned(scanned, variables), x, train=True, mutable=state,
                                  rngs={"dropout": jax.random.key(2)})
    np.testing.assert_allclose(ys, y, rtol=1e-5, atol=1e-6)
    assert_trees_close(scan_layout.to_unrolled(scanned, dict(updated_s)), dict(updated))
    if norm == "user_norms:holistic_rms":  # parameter-free: only the convolutions and attention have weights
        names = {p[-2] for p in flax.traverse_util.flatten_dict(variables["params"])}
        assert not any(n.startswith("norm") for n in names)
    else:
        assert state == ["norm_stats"]


def test_errors_are_one_line_and_name_the_key():
    cases = {"user_norms:Nope": "model.norm='user_norms:Nope': module 'user_norms' has no attribute 'Nope'",
             "no_such_module_xyz:A": "model.norm='no_such_module_xyz:A': cannot import module 'no_such_module_xyz'",
             "user_norms:NOT_A_NORM": "model.norm='user_norms:NOT_A_NORM': int is not a norm: expected a "
                                      "flax.linen.Module class",
             "groupnorm": "Unknown model.norm 'groupnorm'; valid norms: layernorm,"}
    for norm, message in cases.items():
        with pytest.raises(ConfigError) as e:
            train_and_evaluate(tiny_config(SPEC, **{"model.norm": norm}), "/nonexistent/never_created")
        assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match="built-in norm"):
        norm_registry.register_norm("layernorm", norm_registry.resolve_norm("user_norms:RunningRMSNorm").branch)


def test_converter_refuses_a_user_norm_without_official_counterpart():
    module = models.create("swinir", norm=NORM, **KW)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(convert.ConversionError) as e:
        convert.to_torch("swinir", variables, norm=NORM, **KW)
    assert str(e.value).startswith(f"norm {NORM!r} cannot be converted to/from the official swinir layout "
                                   "(official norm: layernorm): its variables ") and "\n" not in str(e.value)
    assert "norm1.branch_gain" in str(e.value) or "norm.ms" in str(e.value)
    sd = convert.to_torch("swinir", models.create("swinir", **KW).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))),
                          **KW)
    with pytest.raises(convert.ConversionError, match="no counterpart for the official"):
        convert.from_torch("swinir", sd, norm="user_norms:holistic_rms", **KW)

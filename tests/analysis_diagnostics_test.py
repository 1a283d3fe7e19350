"""Diagnostics: known answers for the statistics, per-block capture on LN and i-LN models, the
training hook and its log, position-bias images, bias alignment, plots."""
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax import models
from iln_jax import diagnostics
from iln_jax.analysis import bias_alignment, plots, position_bias
from iln_jax.analysis.report import analyze_model

BLOCKS = ["layers_0/residual_group/blocks_0", "layers_0/residual_group/blocks_1",
          "layers_1/residual_group/blocks_0", "layers_1/residual_group/blocks_1"]


@pytest.fixture(scope="module")
def tiny():
    module = models.create("swinir", norm="layernorm", img_size=8, window_size=4, depths=(2, 2), num_heads=(2, 2),
                           embed_dim=8, mlp_ratio=2, upsampler="pixelshuffledirect", upscale=2)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)), jnp.float32)
    return module, variables, x


def test_statistics_known_answers():
    x = np.zeros((2, 3, 3, 4), np.float32)
    x[..., 1] = 2.0  # all energy in one channel
    s = {k: float(v) for k, v in diagnostics.feature_stats(x).items()}
    assert s["entropy"] == pytest.approx(0.0, abs=1e-6) and s["sq_mean"] == pytest.approx(1.0)
    assert s["mean_sq"] == pytest.approx(0.25) and s["max_abs"] == 2.0
    y = np.random.default_rng(0).choice([-3.0, 3.0], size=(2, 5, 5, 8)).astype(np.float32)
    s = {k: float(v) for k, v in diagnostics.feature_stats(y).items()}
    assert s["entropy"] == pytest.approx(math.log(8), abs=1e-6) and s["entropy_norm"] == pytest.approx(1.0)
    assert s["sq_mean"] == pytest.approx(9.0)
    energy = np.array([1.0, 3.0])
    p = energy / 4
    assert float(diagnostics.channel_entropy(jnp.asarray(energy))) == pytest.approx(-(p * np.log(p)).sum())


@pytest.mark.parametrize("norm", ["layernorm", "iln"])
def test_block_stats_for_layernorm_and_iln(tiny, norm):
    module, variables, x = tiny
    module = module.clone(norm=norm)
    stats = diagnostics.make_stats_fn(module, level="all")(variables, x)
    assert list(stats) == BLOCKS[:2] + ["layers_0"] + BLOCKS[2:] + ["layers_1"]  # forward order
    for s in stats.values():
        assert all(np.isfinite(v) for v in s.values())
        assert 0 <= s["entropy"] <= math.log(8) + 1e-5 and 0 <= s["entropy_norm"] <= 1 + 1e-6
        assert s["sq_mean"] >= s["mean_sq"] and s["max_abs"] ** 2 >= s["sq_mean"]
    groups = jax.jit(lambda v, x: diagnostics.capture_features(module, v, x, level="groups"))(variables, x)
    assert list(groups) == ["layers_0", "layers_1"] and groups["layers_0"].shape == (2, 16, 16, 8)


def test_training_hook_and_log(tiny, tmp_path):
    module, variables, x = tiny
    diag = diagnostics.make_diagnostics_fn(module, max_images=1)
    out = diag(variables, x)
    assert set(out) == {f"{b}/{s}" for b in BLOCKS for s in diagnostics.DEFAULT_LOG_STATS}
    assert all(v.shape == () for v in out.values())
    log = diagnostics.DiagnosticsLog(tmp_path)
    for step in (10, 20, 30):
        log.write(step, out)
    diagnostics.DiagnosticsLog(tmp_path, resume_step=20)  # a resumed run drops step 30
    history = diagnostics.read_diagnostics(tmp_path / "diagnostics.jsonl")
    assert history["steps"].tolist() == [10, 20] and history["blocks"] == BLOCKS
    assert history["sq_mean"].shape == (2, 4) and np.all(np.isfinite(history["entropy_norm"]))
    png = plots.plot_dynamics({"LN": history, "i-LN": history}, tmp_path / "dyn.png")
    assert png.stat().st_size > 1000


def test_position_bias_images_put_zero_offset_at_the_centre(tiny):
    module, variables, _ = tiny
    ws, heads = 4, 2
    table = np.zeros(((2 * ws - 1) ** 2, heads), np.float32)
    table[(ws - 1) * (2 * ws - 1) + (ws - 1), 1] = 5.0  # zero offset, head 1
    images = position_bias.position_bias_images({"blk": {"attn": {"relative_position_bias_table": table}}})
    img = images["blk/attn"]
    assert img.shape == (heads, 7, 7) and img[1, 3, 3] == 5.0 and img.sum() == 5.0
    locality = position_bias.head_locality(img)
    assert locality[1]["distance_corr"] > 0.3 and locality[0]["distance_corr"] == 0.0
    real = position_bias.position_bias_images(variables["params"], module)
    assert len(real) == 4 and all(v.shape == (2, 7, 7) for v in real.values())


def test_bias_alignment_and_offline_report(tiny, tmp_path):
    module, variables, x = tiny
    params = jax.tree.map(np.asarray, variables["params"])
    params["conv_first"]["bias"] = np.eye(8, dtype=np.float32)[2] * 50.0  # a constant carrier channel
    v = {"params": params}
    res = bias_alignment.bias_alignment(module, v, x)
    assert res["feature"] == "layers_1" and res["channels"] == 8
    assert res["residual"]["topk_overlap"] == 1.0 and res["residual"]["cos_bias_mean"] > 0.7
    assert res["dc_share"] > 0.5 and "final_norm" in res
    (tmp_path / "dynamics.png").write_bytes(b"stale")  # an earlier analysis's figure must not pass for this one's
    result = analyze_model(module, v, [np.asarray(x[0]), np.asarray(x[1])], tmp_path, label="tiny LN", crop=16)
    assert result["written"] == ["depth_profile.png", "position_bias.png", "bias_alignment.png", "analysis.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(result["written"])
    assert all((tmp_path / name).stat().st_size > 100 for name in result["written"])
    assert result["not_written"] == {"dynamics.png": "no training run given (only a run's --workdir has a "
                                                     "diagnostics history)"}
    assert result["max_abs_feature"] > 0 and result["fp16_headroom"] > 0


def test_why_a_run_has_no_diagnostics(tmp_path):
    def run(every, final_step, log=""):
        workdir = tmp_path / f"run_{every}_{final_step}_{bool(log)}"
        workdir.mkdir()
        (workdir / "config.json").write_text(json.dumps({"train": {"diagnostics_every": every}}))
        (workdir / "summary.json").write_text(json.dumps({"final_step": final_step}))
        if log:
            (workdir / "diagnostics.jsonl").write_text(log)
        return workdir
    assert diagnostics.missing_reason(run(2, 4, '{"step": 2}\n')) is None
    assert "train.diagnostics_every=0 (off)" in diagnostics.missing_reason(run(0, 4))
    assert "ended at step 200, before its first diagnostics step (train.diagnostics_every=1000)" in (
        diagnostics.missing_reason(run(1000, 200)))
    assert "no " in diagnostics.missing_reason(tmp_path)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions save, kept open for inspection."""
    kept = []

    def save(fig, path):
        kept.append(fig)
        fig.savefig(path)
        return Path(path)
    monkeypatch.setattr(plots, "_save", save)
    yield kept
    for fig in kept:
        plots._plt().close(fig)


def _colour_bars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_plots_put_colour_bars_right_of_every_panel_and_count_blocks_in_integers(figures, tmp_path):
    rng = np.random.default_rng(0)
    history = {"steps": np.array([2, 4, 6]), "blocks": ["b0", "b1", "b2"],
               **{s: rng.uniform(0.5, 2.0, size=(3, 3)) for s in ("sq_mean", "entropy_norm", "max_abs")}}
    histories = {"LN": history, "i-LN": history, "none": history}
    stats = ("sq_mean", "entropy_norm", "max_abs")
    plots.plot_dynamics(histories, tmp_path / "d.png", stats=stats)
    plots.plot_depth_over_training(histories, tmp_path / "o.png", stats=stats)
    for fig in figures:
        fig.canvas.draw()
        (bar,) = _colour_bars(fig)  # one for the whole figure ...
        panels = [ax for ax in fig.axes if ax is not bar]
        assert len(panels) == 9
        assert bar.get_position().x0 > max(ax.get_position().x1 for ax in panels)  # ... right of every panel
    assert all(float(t).is_integer() for t in _colour_bars(figures[0])[0].get_yticks())  # block numbers
    profiles = {"LN": {b: {"sq_mean": 1.0 + i} for i, b in enumerate(history["blocks"])}}
    plots.plot_depth_profiles(profiles, tmp_path / "p.png", stats=("sq_mean",))
    ax = figures[-1].axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    images = {f"layers_{i}/attn": rng.normal(size=(3, 7, 7)) for i in range(2)}
    plots.plot_position_bias(images, tmp_path / "b.png")
    fig = figures[-1]
    fig.canvas.draw()
    bars = _colour_bars(fig)
    assert len(bars) == 2  # one per attention module, right of its heads
    heads = [ax for ax in fig.axes if ax not in bars]
    for bar, row in zip(bars, (heads[:3], heads[3:])):
        assert bar.get_position().x0 >= max(ax.get_position().x1 for ax in row)
        assert abs(bar.get_position().y0 - row[0].get_position().y0) < 0.1


def test_hat_overlapping_attention_tables_are_centred():
    """Each (query, key) pair's bias lands at offset key - query from the image centre."""
    from iln_jax.layers.window import overlapping_relative_position_index

    class HatLike:
        window_size, overlap_ratio = 8, 0.5

    ws, wse = 8, 12
    pad, side = (wse - ws) // 2, ws + wse - 1
    table = np.arange(side * side, dtype=np.float32)[:, None]  # each entry holds its own flat index
    params = {"layers_0": {"residual_group": {"overlap_attn": {"relative_position_bias_table": table}}}}
    img = position_bias.position_bias_images(params, HatLike())["layers_0/residual_group/overlap_attn"][0]
    index = np.mod(overlapping_relative_position_index(ws, wse), side * side)
    for q in range(0, ws * ws, 7):
        for k in range(0, wse * wse, 5):
            dy, dx = k // wse - pad - q // ws, k % wse - pad - q % ws
            assert img[dy + pad + ws - 1, dx + pad + ws - 1] == index[q, k]


def test_diagnostics_hook_takes_the_trainers_sharded_batch_and_replicated_state(tiny):
    from iln_jax.train.parallel import DataParallel
    module, variables, x = tiny
    dp = DataParallel("mesh")
    lq = np.concatenate([np.asarray(x)] * (dp.num_devices // 2))
    batch = dp.shard_batch({"lq": lq})
    replicated = jax.device_put(variables, dp.replicated)
    diag = diagnostics.make_diagnostics_fn(module, max_images=2)
    sharded, single = diag(replicated, batch["lq"]), diag(variables, x)
    assert list(sharded) == list(single)
    for k in single:
        np.testing.assert_allclose(float(sharded[k]), float(single[k]), rtol=1e-4)

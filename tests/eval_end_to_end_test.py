"""eval.py end to end on a tiny Orbax checkpoint and tests/data/Set5; .pth loading; bad input."""
import functools
import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from iln_jax import convert
from iln_jax.evaluation import benchmarks, checkpoints
from iln_jax.evaluation.checkpoints import CheckpointMismatchError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _eval_module():
    spec = importlib.util.spec_from_file_location("eval_cli", ROOT / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training run directory in the trainer's layout: Orbax TrainState (+ EMA) and its config."""
    from iln_jax.train import create_train_state, load_config
    from iln_jax.train.checkpoint import Checkpointer
    from iln_jax.train.loop import build_model
    from iln_jax.train.optim import make_optimizer
    config = load_config(str(ROOT / "configs/swinir.py") + ":tiny=1,scale=4,norm=iln")
    model = build_model(config)
    tx, _ = make_optimizer(config.optim)
    state = jax.jit(functools.partial(create_train_state, model, tx, seed=0, sample_shape=(1, 8, 8, 3), ema=True))()
    state = state.replace(ema_params=jax.tree.map(lambda p: p * 0.9, state.ema_params))
    workdir = tmp_path_factory.mktemp("run")
    config_dict = json.loads(config.to_json_best_effort())
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=1, save_every=1, async_save=False)
    ckpt.save(3, state, config=config_dict, force=True)
    ckpt.close()
    (workdir / "config.json").write_text(json.dumps(config_dict))
    return workdir, state, config


def test_eval_cli_on_set5_writes_images_and_tables(run_dir, data_dir, tmp_path):
    workdir, state, _ = run_dir
    out = tmp_path / "out"
    results = _eval_module().main(["--workdir", str(workdir), "--data-root", str(data_dir), "--datasets", "Set5",
                                   "--out", str(out), "--no-progress", "--max-compiles", "3"])
    (r,) = results
    assert r["num_images"] == 5 and r["task"] == "sr" and r["scale"] == 4 and r["crop_border"] == 4
    assert r["convention"] == "Y, crop 4" and np.isfinite(r["psnr"]) and r["nonfinite_pixels"] == 0
    # Known answer (METRICS.md): MATLAB-bicubic x4 of Set5 LR_bicubic/X4, Y, crop 4.
    assert r["baseline"]["psnr"] == pytest.approx(28.4305, abs=5e-4)
    assert r["baseline"]["ssim"] == pytest.approx(0.81126, abs=5e-5)
    # 5 image sizes; --bucket auto pads to the smallest bucket that needs at most 3 compilations
    assert len(r["compiled_shapes"]) <= 3 and r["settings"]["bucket"] > 0
    assert sorted(p.name for p in (out / "Set5" / "images").iterdir()) == [
        "baby.png", "bird.png", "butterfly.png", "head.png", "woman.png"]
    with Image.open(out / "Set5" / "images" / "baby.png") as im:
        assert im.size == (512, 512)
    saved = json.loads((out / "Set5" / "results.json").read_text())
    assert saved["settings"]["norm"] == "iln" and "ema_params" in saved["settings"]["model"]
    assert "| **mean** |" in (out / "Set5" / "results.md").read_text()
    assert "Set5" in (out / "summary.md").read_text()


def test_ema_or_raw_weights_and_mismatch_errors(run_dir):
    workdir, state, _ = run_dir
    ema = checkpoints.load_run(workdir)
    raw = checkpoints.load_run(workdir, weights="raw")
    kernel = ("conv_first", "kernel")
    np.testing.assert_allclose(ema.variables["params"][kernel[0]][kernel[1]],
                               np.asarray(state.ema_params[kernel[0]][kernel[1]]))
    np.testing.assert_allclose(raw.variables["params"][kernel[0]][kernel[1]],
                               np.asarray(state.params[kernel[0]][kernel[1]]))
    with pytest.raises(CheckpointMismatchError, match="norm: checkpoint 'iln', requested 'layernorm'"):
        checkpoints.load_run(workdir, norm="layernorm")
    with pytest.raises(CheckpointMismatchError, match="arch: checkpoint 'swinir', requested 'hat'"):
        checkpoints.load_run(workdir, arch="hat")
    with pytest.raises(CheckpointMismatchError, match="kwargs.embed_dim"):
        checkpoints.load_run(workdir, model_kwargs={"embed_dim": 16})
    # Without a saved config the parameter tree is checked: LayerScale needs parameters i-LN lacks.
    layerscale = ema.module.clone(norm="layerscale")
    with pytest.raises(CheckpointMismatchError, match="missing .*branch_scale"):
        checkpoints.check_tree(layerscale, ema.variables, (1, 8, 8, 3), "the checkpoint")


def test_official_pth_loads_and_a_wrong_arch_is_named(run_dir, tmp_path):
    torch = pytest.importorskip("torch")
    workdir, _, config = run_dir
    loaded = checkpoints.load_run(workdir)
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.model.kwargs.to_dict().items()
              if v is not None}
    sd = convert.to_torch("swinir", loaded.variables, norm="iln", **kwargs)
    path = tmp_path / "tiny.pth"
    torch.save({"params_ema": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, path)
    pth = checkpoints.load_pth(path, "swinir", norm="iln", **kwargs)
    np.testing.assert_array_equal(pth.variables["params"]["conv_first"]["kernel"],
                                  loaded.variables["params"]["conv_first"]["kernel"])
    with pytest.raises(CheckpointMismatchError, match="look like arch 'swinir'"):
        checkpoints.load_pth(path, "drct", **kwargs)


def _write(path, shape):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, 128, np.uint8)).save(path)


def test_unpaired_and_mis_sized_benchmark_files_are_named(tmp_path):
    root = tmp_path / "Bench"
    _write(root / "HR" / "a.png", (16, 16, 3))
    _write(root / "HR" / "b.png", (16, 16, 3))
    _write(root / "LR_bicubic" / "X2" / "ax2.png", (8, 8, 3))
    with pytest.raises(ValueError, match=r"unpaired.*HR/b\.png"):
        benchmarks.load(benchmarks.data_config("sr", str(root), scale=2))
    _write(root / "LR_bicubic" / "X2" / "bx2.png", (5, 8, 3))
    with pytest.raises(ValueError, match=r"bx2\.png is 5x8.*b\.png should be"):
        benchmarks.load(benchmarks.data_config("sr", str(root), scale=2))
    # HR only: LR is made on the fly.
    _write(tmp_path / "HROnly" / "c.png", (17, 16, 3))
    (im,) = benchmarks.load(benchmarks.data_config("sr", str(tmp_path / "HROnly"), scale=2))
    assert im["lq"].shape == (8, 8, 3) and im["gt"].shape == (16, 16, 3)
    with pytest.raises(FileNotFoundError, match="Bench"):
        benchmarks.resolve_dataset(str(tmp_path), "Set14")


def test_denoising_and_deraining_layouts(tmp_path):
    _write(tmp_path / "CBSD68" / "x.png", (12, 12, 3))
    (im,) = benchmarks.load(benchmarks.data_config("dn", str(tmp_path / "CBSD68"), noise_sigma=25))
    assert im["lq"].shape == im["gt"].shape and 0 < np.std(im["lq"] - im["gt"]) < 0.2
    _write(tmp_path / "Rain" / "input" / "r.png", (12, 12, 3))
    with pytest.raises(FileNotFoundError, match="input/ and target/"):
        benchmarks.load(benchmarks.data_config("dr", str(tmp_path / "Rain")))
    _write(tmp_path / "Rain" / "target" / "r.png", (12, 12, 3))
    assert len(benchmarks.load(benchmarks.data_config("dr", str(tmp_path / "Rain")))) == 1

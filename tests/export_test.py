"""iln_jax.export: one serialized file with symbolic batch/height/width equals the live model on
odd sizes (SwinIR/HAT/DRCT with shifted windows, Restormer); float16/bfloat16; the loader runs without the model code; the CLI's sources."""
import io
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax import convert, export, models
from iln_jax.inference.precision import for_precision

ROOT = pathlib.Path(__file__).resolve().parent.parent
SWINIR = dict(img_size=8, window_size=4, depths=(2,), num_heads=(2,), embed_dim=8, mlp_ratio=2,  # shifted windows
              upsampler="pixelshuffle", upscale=2, padding="symmetric")
HAT_ILN = dict(norm="iln", stdnorm=True, img_size=8, window_size=4, depths=(2,), num_heads=(2,), embed_dim=8,
               mlp_ratio=2, upsampler="pixelshuffle", upscale=2, compress_ratio=2, squeeze_factor=2)
DRCT = dict(img_size=8, window_size=4, depths=(1,), num_heads=(2,), embed_dim=8, mlp_ratio=2, gc=4,
            upsampler="pixelshuffle", upscale=2)
RESTORMER = dict(norm="iln", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 1, 1))
# What the symbolic padding must handle: the most rows padded (9) beside none (8), in a batch of two;
# unequal sides, both padded (37 x 21).
ODD_SIZES = [(2, 9, 8), (1, 37, 21)]


def _model(arch, kwargs, seed=0):
    """(module, variables, jitted apply: the live reference)."""
    module = models.create(arch, **kwargs)
    variables = jax.jit(module.init)(jax.random.key(seed), jnp.zeros((1, 8, 8, 3)))
    return module, variables, jax.jit(module.apply)


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture(scope="module")
def swinir():
    return _model("swinir", SWINIR)


@pytest.fixture(scope="module")
def restormer():
    return _model("restormer", RESTORMER)


@pytest.mark.parametrize("arch, kwargs, scale", [("swinir", SWINIR, 2), ("hat", HAT_ILN, 2), ("drct", DRCT, 2),
                                                  ("restormer", RESTORMER, 1)], ids=["swinir", "hat-iln", "drct",
                                                                                     "restormer-iln"])
def test_one_file_equals_the_live_model_on_every_odd_size(arch, kwargs, scale, request, tmp_path):
    module, variables, live = request.getfixturevalue("restormer") if arch == "restormer" else _model(arch, kwargs)
    path = tmp_path / "restorer.npz"
    export.export_restorer(module, variables).save(path)
    restore = export.load(path)
    assert str(restore.exported.in_avals[-1]) == "float32[b,h,w,3]"
    assert str(restore.exported.out_avals[0]) == ("float32[b,2*h,2*w,3]" if scale == 2 else "float32[b,h,w,3]")
    assert restore.meta["padding"] == module.padding and restore.meta["min_size"] == restore.meta["multiple"]
    for i, (b, h, w) in enumerate(ODD_SIZES):
        x = jax.random.uniform(jax.random.key(i), (b, h, w, 3))
        y = restore(x)
        assert y.shape == (b, h * scale, w * scale, 3) and y.dtype == jnp.float32
        assert _rel_err(y, live(variables, x)) <= 1e-6, (b, h, w)
    image = np.asarray(x[0])
    assert _rel_err(restore(image), live(variables, image[None])[0]) <= 1e-6  # (H, W, C) works too


def test_symbolic_padding_equals_the_models_padding():
    from iln_jax.layers.padding import pad_to_multiple
    x = jax.random.uniform(jax.random.key(0), (1, 11, 16, 2))
    for mode in ("reflect", "symmetric"):
        np.testing.assert_array_equal(export.pad_to_multiple_symbolic(x, 8, mode), pad_to_multiple(x, 8, mode))


def test_a_model_that_needs_a_fixed_size_gets_one(tmp_path):
    # ape=True adds a learned position embedding of exactly img_size x img_size: no symbolic size fits.
    module, variables, live = _model("swinir", dict(SWINIR, ape=True, padding="reflect"))
    with pytest.raises(export.ExportError) as e:
        export.export_restorer(module, variables)
    assert str(e.value).startswith("SwinIR cannot be traced with a symbolic image size (ValueError: ape=True")
    assert str(e.value).endswith("export one fixed size with height=/width= (--height/--width)")
    export.export_restorer(module, variables, height=7, width=7).save(tmp_path / "fixed.npz")  # padded to 8x8
    restore = export.load(tmp_path / "fixed.npz")
    x = jax.random.uniform(jax.random.key(0), (3, 7, 7, 3))  # the batch stays symbolic
    assert _rel_err(restore(x), live(variables, x)) <= 1e-6
    with pytest.raises(ValueError, match="exported for 7x7 images; got 9x8"):
        restore(np.zeros((9, 8, 3), np.float32))


@pytest.mark.parametrize("dtype, precision", [("float16", "fp16"), ("bfloat16", "bf16")])
def test_low_precision_files_hold_cast_weights_and_match_the_low_precision_model(dtype, precision, tmp_path):
    module, variables, live = _model("swinir", dict(SWINIR, norm="iln"))
    export.export_restorer(module, variables, dtype=dtype).save(tmp_path / "f.npz")
    restore = export.load(tmp_path / "f.npz")
    assert {np.dtype(w.dtype).name for w in restore.weights} == {dtype}
    low_module, low_vars = for_precision(module, variables, precision)
    x = jax.random.uniform(jax.random.key(1), (1, 13, 19, 3))
    y = np.asarray(restore(x))
    assert y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y, np.asarray(jax.jit(low_module.apply)(low_vars, x), np.float32), atol=2e-2)
    assert np.abs(y - np.asarray(live(variables, x))).max() < 5e-2


def test_the_loader_runs_without_the_model_code(swinir, tmp_path):
    module, variables, live = swinir
    export.export_restorer(module, variables).save(tmp_path / "f.npz")
    x = np.asarray(jax.random.uniform(jax.random.key(2), (1, 21, 11, 3)))
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np\n"
              "for name in ('flax', 'iln_jax.models', 'iln_jax.layers', 'iln_jax.inference', 'torch'):\n"
              "    sys.modules[name] = None  # importing any of them now fails\n"
              "from iln_jax.export import load\n"
              f"y = load({str(tmp_path / 'f.npz')!r})(np.load({str(tmp_path / 'x.npy')!r}))\n"
              f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(y))\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=300)
    assert _rel_err(np.load(tmp_path / "y.npy"), live(variables, x)) <= 1e-6


def test_bad_requests_and_files_are_named(swinir, tmp_path):
    module, variables, _ = swinir
    with pytest.raises(export.ExportError, match="Unknown dtype 'int8'; valid: float32, bfloat16, float16"):
        export.export_restorer(module, variables, dtype="int8")
    export.export_restorer(module, variables).save(tmp_path / "f.npz")
    restore = export.load(tmp_path / "f.npz")
    with pytest.raises(ValueError, match=r"Expected \(H, W, 3\) or \(B, H, W, 3\) input; got shape \(9, 9, 1\)"):
        restore(np.zeros((9, 9, 1), np.float32))
    with pytest.raises(ValueError, match="Images must be at least 4x4 .*; got 3x9"):
        restore(np.zeros((3, 9, 3), np.float32))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match=f"{tmp_path / 'other.npz'} is not an exported restorer file"):
        export.load(tmp_path / "other.npz")


def _run_dir(root, module_kwargs, params, ema_params):
    """A work directory in the trainer's layout (Orbax state with EMA, and the run's config)."""
    from iln_jax.train.checkpoint import Checkpointer
    ckpt = Checkpointer(root / "checkpoints", max_to_keep=1, save_every=1, async_save=False)
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in module_kwargs.items()}
    config = {"model": {"arch": "swinir", "norm": "iln", "kwargs": kwargs}, "data": {"task": "sr", "scale": 2}}
    ckpt.save(7, {"params": params, "ema_params": ema_params}, config=config, force=True)
    ckpt.close()
    return root


def test_cli_exports_a_training_runs_ema_weights(tmp_path, capsys):
    from iln_jax.export.__main__ import main
    module, variables, live = _model("swinir", dict(SWINIR, norm="iln", padding="reflect"))
    ema = jax.tree.map(lambda p: 0.5 * p, variables["params"])
    run = _run_dir(tmp_path / "run", dict(SWINIR, padding="reflect"), variables["params"], ema)
    out = main(["--workdir", str(run), "--out", str(tmp_path / "f.npz"), "--no-progress"])
    printed = capsys.readouterr().out
    assert "x2, reflect padding to a multiple of 4, any size >= 4x4, batch any" in printed
    assert "check on a 17x11 photo: max |file - float32 model|" in printed and "non-finite pixels 0" in printed
    restore = export.load(out)
    assert "ema_params" in restore.meta["source"] and restore.meta["norm"] == "iln"
    x = jax.random.uniform(jax.random.key(3), (1, 17, 10, 3))
    assert _rel_err(restore(x), live({"params": ema}, x)) <= 1e-6


def test_cli_exports_a_pretrained_model_with_its_official_padding(swinir, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from iln_jax.export.__main__ import main
    module, variables, live = swinir
    official = {k: v for k, v in SWINIR.items() if k != "padding"}
    sd = convert.to_torch("swinir", variables, **official)
    buf = io.BytesIO()
    torch.save({"params": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, buf)
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "tiny.pth").write_bytes(buf.getvalue())
    entry = {"arch": "swinir", "file_name": "tiny.pth", "page": "here", "task": "sr", "scale": 2,
             "padding": "symmetric", "kwargs": {k: v for k, v in official.items() if k != "upscale"}}
    (tmp_path / "registry.json").write_text(json.dumps({"tiny": entry}))
    out = main(["--pretrained", "tiny", "--cache-dir", str(tmp_path), "--dtype", "bfloat16",
                "--out", str(tmp_path / "f.npz"), "--no-progress"])
    assert "symmetric padding to a multiple of 4" in capsys.readouterr().out
    restore = export.load(out)
    assert restore.meta["source"] == "tiny (tiny.pth)" and restore.meta["dtype"] == "bfloat16"
    x = jax.random.uniform(jax.random.key(4), (1, 11, 14, 3))
    assert np.abs(np.asarray(restore(x)) - np.asarray(live(variables, x))).max() < 5e-2


def test_an_artifact_for_several_platforms_gets_portable_attention_and_convs(swinir):
    module, variables, _ = swinir
    both = export.export_restorer(module.clone(attention_impl="auto"), variables, platforms=("cpu", "cuda"))
    assert both.meta["platforms"] == ["cpu", "cuda"] and both.meta["attention_impl"] == "xla"
    assert both.meta["conv_impl"] == "xla"  # XLA:CPU's conv formulations are for XLA:CPU only
    assert export.export_restorer(module, variables).meta["conv_impl"] == module.conv_impl == "auto"
    with pytest.raises(export.ExportError, match="attention_impl='cudnn' runs only on CUDA GPUs, but the export "
                                                 "targets cpu"):
        export.export_restorer(module.clone(attention_impl="cudnn"), variables, platforms=("cpu",))


def test_the_loaded_function_re_exports_with_symbolic_shapes(swinir, tmp_path):
    """What jax2tf.convert(..., polymorphic_shapes=...) does with the loaded function (TF is optional)."""
    module, variables, live = swinir
    export.export_restorer(module, variables).save(tmp_path / "f.npz")
    fn = export.load(tmp_path / "f.npz").as_function()
    b, h, w = jax.export.symbolic_shape("b, h, w")
    again = jax.export.export(jax.jit(fn))(jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32))
    x = jax.random.uniform(jax.random.key(5), (1, 10, 7, 3))
    assert _rel_err(again.call(x), live(variables, x)) <= 1e-6

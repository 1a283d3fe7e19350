"""Each command's expected failures as a user meets them: a subprocess, its exit status, one line on
stderr (the traceback only with ILN_JAX_TRACEBACK=1) and nothing written.

Optional packages are made absent for a subprocess by a stand-in module that raises the
ModuleNotFoundError a missing package raises (``_without``), whatever this machine has installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xla_flags

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_URL_REFUSED = "http://127.0.0.1:9/001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth"  # nothing listens on port 9
SWINIR_X2_FILE = "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth"


def _without(tmp_path: Path, *packages: str) -> str:
    """A folder whose modules stand in for ``packages`` as not installed (first on PYTHONPATH)."""
    folder = tmp_path / "absent_packages"
    folder.mkdir(exist_ok=True)
    for name in packages:
        (folder / f"{name}.py").write_text(f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
    return str(folder)


def _cli(args: list, cwd: Path, *, absent: str = "", traceback: bool = False) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "ILN_JAX_"))}
    env.update(xla_flags.process_env(1), PYTHONPATH=os.pathsep.join(p for p in (absent, str(ROOT)) if p),
               ILN_JAX_CACHE=str(cwd / "cache"))
    if traceback:
        env["ILN_JAX_TRACEBACK"] = "1"
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stdout, done.stderr


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _user_dir(tmp_path: Path) -> Path:
    cwd = tmp_path / "user"
    cwd.mkdir()
    return cwd


# --- missing optional packages ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train.py", "eval.py"])
def test_gs_work_directory_without_the_cloud_packages(tmp_path, command):
    cwd = _user_dir(tmp_path)
    rc, out, err = _cli([ROOT / command, "--workdir", "gs://bucket/run"], cwd, absent=_without(tmp_path, "gcsfs"))
    prog = command[:-3]
    assert (rc, _one_line(err)) == (1, f"[{prog}] error: --workdir gs://bucket/run needs gcsfs, which is not installed: "
                                       f"pip install -r requirements-cloud.txt"), out
    assert not any(cwd.iterdir())  # nothing written (no runs/, no mangled gs:/bucket)


def test_the_traceback_is_shown_on_request(tmp_path):
    cwd = _user_dir(tmp_path)
    rc, _, err = _cli([ROOT / "train.py", "--workdir", "gs://bucket/run"], cwd, absent=_without(tmp_path, "gcsfs"),
                      traceback=True)
    assert rc == 1 and "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("iln_jax.errors.MissingDependencyError: --workdir gs://bucket/run")


def test_pth_without_torch(tmp_path):
    cwd = _user_dir(tmp_path)
    (cwd / "model.pth").write_bytes(b"PK\x03\x04" + bytes(60))  # looks like a torch.save zip
    rc, _, err = _cli([ROOT / "eval.py", "--pth", "model.pth", "--variant", "swinir-classical"], cwd,
                      absent=_without(tmp_path, "torch"))
    assert (rc, _one_line(err)) == (1, "[eval] error: reading model.pth needs torch, which is not installed: "
                                       "pip install -r requirements-dev.txt")
    assert sorted(p.name for p in cwd.iterdir()) == ["model.pth"]


def test_a_text_file_given_as_pth(tmp_path):
    cwd = _user_dir(tmp_path)
    (cwd / "model.pth").write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>\n")
    rc, _, err = _cli([ROOT / "eval.py", "--pth", "model.pth", "--variant", "swinir-classical"], cwd)
    assert (rc, _one_line(err)) == (1, "[eval] error: Could not read model.pth as a PyTorch checkpoint: not a "
                                       "torch.save file: it is an HTML page (a download that returned a web page "
                                       "instead of the file?), starting '<!DOCTYPE html><html><body>Sign in to "
                                       "continue</body></html>'")


# --- every command: one line and an exit status ---------------------------------------------------

@pytest.mark.parametrize("prog, args, message", [
    ("analysis", ["-m", "iln_jax.analysis", "--workdir", "no_run"], "no_run"),
    ("export", ["-m", "iln_jax.export", "--workdir", "no_run", "--out", "x.npz"], "no_run"),
    ("pretrained", ["-m", "iln_jax.pretrained", "show", "swinir-clasical-x2"],
     "Unknown pretrained model 'swinir-clasical-x2'; did you mean swinir-classical-x2"),
    ("compare", ["-m", "iln_jax.compare", "--torch-repo", "src/SwinIR", "--torch-class", "models.network_swinir:SwinIR",
                 "--arch", "swinir"], "src/SwinIR is not a folder: clone the official repository"),
    ("compare", ["-m", "iln_jax.compare", "--torch-class", "models.network_swinir:SwinIR", "--arch", "swinir"],
     "cannot import 'models.network_swinir' (from sys.path): No module named 'models'; give --torch-repo"),
    ("grid", ["-m", "iln_jax.experiments.grid", "--config", ROOT / "configs/swinir.py:tiny=1", "--norms", "iln",
              "--out", "grid", "--data-root", "testsets"], "--data-root testsets is not a folder"),
])
def test_every_command_fails_in_one_line(tmp_path, prog, args, message):
    cwd = _user_dir(tmp_path)
    rc, out, err = _cli(args, cwd)
    line = _one_line(err)
    assert rc in (1, 2) and line.startswith(f"[{prog}] error: ") and message in line, out + err
    assert not any(cwd.iterdir())


# --- eval.py: data and official weights -----------------------------------------------------------

def _offline_registry(cwd: Path) -> Path:
    """The cache's local records point swinir-classical-x2 at a port where nothing listens (offline)."""
    cache = cwd / "cache"
    cache.mkdir()
    (cache / "registry.json").write_text(json.dumps({"swinir-classical-x2": {"url": REGISTRY_URL_REFUSED}}))
    return cache


def test_official_weights_offline_say_where_to_put_the_file(tmp_path):
    cwd = _user_dir(tmp_path)
    cache = _offline_registry(cwd)
    rc, _, err = _cli([ROOT / "eval.py", "--pretrained", "swinir-classical-x2", "--no-progress", "--out", "results"], cwd)
    line = _one_line(err)
    assert rc == 1 and line.startswith(f"[eval] error: {REGISTRY_URL_REFUSED}: download failed (URLError: ")
    assert line.endswith(f"; or download that URL by hand (page: https://github.com/JingyunLiang/SwinIR/releases/"
                         f"tag/v0.0) and put the file at {cache / 'downloads' / SWINIR_X2_FILE}")
    assert not (cwd / "results").exists()


@pytest.mark.parametrize("data_root, datasets, message", [
    ("testsets", "Set5", "--data-root testsets is not a folder"),
    ("here", "Set5,Set14", "Benchmark folder 'Set14' not found under here; it contains Set5"),
])
def test_datasets_are_checked_before_any_download(tmp_path, data_root, datasets, message):
    cwd = _user_dir(tmp_path)
    (cwd / "here" / "Set5" / "HR").mkdir(parents=True)
    cache = _offline_registry(cwd)
    rc, _, err = _cli([ROOT / "eval.py", "--pretrained", "swinir-classical-x2", "--data-root", data_root,
                       "--datasets", datasets, "--out", "results"], cwd)
    assert (rc, _one_line(err)) == (1, f"[eval] error: {message}")
    assert not (cache / "downloads").exists() and not (cwd / "results").exists()


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory) -> tuple[Path, str]:
    """A tiny SwinIR x2 in the official .pth layout, and its --kwargs."""
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from iln_jax import convert
    kwargs = dict(upscale=2, img_size=8, window_size=4, depths=[2], num_heads=[2], embed_dim=8, mlp_ratio=2,
                  upsampler="pixelshuffledirect")
    shapes = jax.eval_shape(convert.build("swinir", **kwargs).init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda v: rng.normal(0, 0.1, v.shape).astype(np.float32), shapes)  # no compilation
    path = tmp_path_factory.mktemp("pth") / "tiny_x2.pth"
    sd = convert.to_torch("swinir", variables, **kwargs)
    torch.save({"params": {k: torch.from_numpy(v) for k, v in sd.items()}}, path)
    return path, json.dumps(kwargs)


def _benchmark(root: Path, images: dict) -> None:
    (root / "Tiny" / "HR").mkdir(parents=True)
    for name, data in images.items():
        if isinstance(data, bytes):
            (root / "Tiny" / "HR" / name).write_bytes(data)
        else:
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (*data, 3), np.uint8)).save(root / "Tiny" / "HR" / name)


def test_bad_and_too_small_images(tmp_path, tiny_pth):
    pth, kwargs = tiny_pth
    cwd = _user_dir(tmp_path)
    _benchmark(cwd / "sets", {"a.png": (40, 40), "b_dot.png": (1, 1), "c_strip.png": (3, 60)})
    args = [ROOT / "eval.py", "--pth", pth, "--arch", "swinir", "--kwargs", kwargs, "--data-root", "sets",
            "--datasets", "Tiny", "--no-progress", "--out", "results"]
    rc, _, err = _cli(args, cwd)
    assert (rc, _one_line(err)) == (1, "[eval] error: sets/Tiny/HR/b_dot.png is 1x1, smaller than the scale x2: no "
                                       "input can be made from it (--on-bad-image skip leaves unusable images out "
                                       "and lists them)")
    assert not (cwd / "results").exists()
    rc, out, err = _cli([*args, "--on-bad-image", "skip"], cwd)
    assert rc == 0, out + err
    assert "sets/Tiny/HR/b_dot.png is 1x1, smaller than the scale x2" in err
    assert "Tiny/c_strip: the target is 2x60, too small to measure" in err
    assert json.loads((cwd / "results" / "Tiny" / "results.json").read_text())["num_images"] == 1
    (cwd / "sets" / "Tiny" / "HR" / "a0_broken.png").write_bytes(b"\x89PNG truncated")
    rc, _, err = _cli(args, cwd)
    line = _one_line(err)
    assert rc == 1 and line.startswith("[eval] error: cannot read image sets/Tiny/HR/a0_broken.png: ")
    assert line.endswith("(--on-bad-image skip leaves unusable images out and lists them)")


def test_a_bad_training_image_names_the_skip_flag(tmp_path):
    cwd = _user_dir(tmp_path)
    folder = cwd / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8)).save(folder / "0.png")
    (folder / "1broken.png").write_bytes(b"\x89PNG truncated")
    rc, out, err = _cli([ROOT / "train.py", "--config", f"{ROOT}/configs/swinir.py:tiny=1", "--workdir", "run",
                         "--config.data.source=folder", f"--config.data.root={folder}", "--config.eval.every=-1",
                         "--config.train.diagnostics_every=0"], cwd)
    line = _one_line(err)
    assert rc == 1 and line.startswith(f"[train] error: cannot read image {folder}/1broken.png: "), out + err
    assert line.endswith("(--config.data.on_bad_image=skip leaves unusable images out and lists them)")
    assert not (cwd / "run" / "checkpoints").exists() or not any((cwd / "run" / "checkpoints").iterdir())


# --- pretrained: show, record ---------------------------------------------------------------------

def test_pretrained_show_and_record(tmp_path):
    cwd = _user_dir(tmp_path)
    rc, out, err = _cli(["-m", "iln_jax.pretrained", "show", "swinir-classical-x2"], cwd)
    assert rc == 0 and f"file goes to   {cwd / 'cache' / 'downloads' / SWINIR_X2_FILE}\n" in out, out + err
    (cwd / "cache" / "downloads").mkdir(parents=True)
    (cwd / "cache" / "downloads" / SWINIR_X2_FILE).write_bytes(b"a verified copy")
    rc, out, err = _cli(["-m", "iln_jax.pretrained", "--quiet", "record", "swinir-classical-x2"], cwd)
    assert rc == 0, err
    assert out.splitlines()[0].startswith("recorded swinir-classical-x2: size=15, sha256=")
    assert "not recorded" not in out + err


# --- the work directory follows the norm ----------------------------------------------------------

@pytest.mark.parametrize("override, workdir, stdnorm", [
    ("--config.model.norm=layernorm", "runs/swinir_srx2_layernorm_tiny", ""),
    ("--config.model.norm=iln", "runs/swinir_srx2_iln_tiny",
     ", stdnorm on (inputs divided by the RGB std, as the official i-LN)"),
])
def test_the_work_directory_and_stdnorm_follow_a_norm_override(tmp_path, override, workdir, stdnorm):
    cwd = _user_dir(tmp_path)
    # train.num_steps=0 stops the run at the config check, after train.py says where it would go
    rc, out, err = _cli([ROOT / "train.py", "--config", f"{ROOT}/configs/swinir.py:tiny=1", override,
                         "--config.train.num_steps=0"], cwd)
    assert rc == 2 and _one_line(err) == "[train] error: train.num_steps must be >= 1, got 0"
    assert out.splitlines()[0] == f"[train] {workdir}: swinir, norm {override.split('=')[1]}{stdnorm}"
    assert not (cwd / "runs").exists()


def test_norm_dependent_config_values():
    from train_util import tiny_config
    assert tiny_config(**{"model.norm": "rmsnorm"}).name == "swinir_srx2_rmsnorm_tiny"
    c = tiny_config(**{"model.norm": "my_norms:MyNorm"})
    assert c.name == "swinir_srx2_my_norms_MyNorm_tiny" and c.model.kwargs.stdnorm is False
    c = tiny_config(**{"model.norm": "layernorm", "model.kwargs.stdnorm": True, "name": "mine"})
    assert (c.name, c.model.kwargs.stdnorm) == ("mine", True)  # set explicitly: kept
    assert tiny_config("configs/default.py").name == "default"
    assert tiny_config("configs/default.py:tiny=1", **{"model.norm": "layernorm"}).name == "default_layernorm_tiny"

"""A ``gs://`` work directory takes the same code path as a local one (offline, tests/cloud_fake.py).

One run on ``gs://bucket/run``: preempted by SIGTERM at step 4, resumed to step 10, then evaluated
with eval.py into ``gs://bucket/eval``. Every file lands in the bucket, nothing beside it on the
local disk, every path reaching Orbax/TensorStore is the unmangled URL, and the resumed run equals
the uninterrupted local reference bit for bit.
"""
import importlib.util
import os
import pathlib
import signal

import pytest
from etils import epath

import cloud_fake
from iln_jax.train import train_and_evaluate
from iln_jax.train.checkpoint import load_state
from train_util import REFERENCE_OVERRIDES, REFERENCE_SPEC, assert_trees_equal, tiny_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
URL = "gs://bucket/run"


def test_gs_workdir_train_sigterm_resume_eval(tmp_path, monkeypatch, reference_run):
    reached = cloud_fake.install(monkeypatch, tmp_path / "gcs")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    overrides = {**REFERENCE_OVERRIDES, "train.checkpoint_every": 3, "eval.every": 5,
                 "train.diagnostics_every": 5}  # neither changes the numbers (train_util.REFERENCE_*)
    config = tiny_config(REFERENCE_SPEC, **overrides)

    def term_at_4(step, state):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train_and_evaluate(config, URL, on_step=term_at_4)
    assert first["status"] == "preempted" and first["final_step"] == 4
    second = train_and_evaluate(tiny_config(REFERENCE_SPEC, **overrides), URL)
    assert second["status"] == "completed" and second["start_step"] == 4 and second["final_step"] == 10

    spec = importlib.util.spec_from_file_location("eval_cli", ROOT / "eval.py")
    eval_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_cli)
    (result,) = eval_cli.main(["--workdir", URL, "--out", "gs://bucket/eval", "--no-progress"])
    assert result["num_images"] > 0

    run, out = epath.Path(URL), epath.Path("gs://bucket/eval")
    for name in ("config.json", "summary.json", "metrics_train.csv", "metrics_val.csv", "metrics.jsonl",
                 "diagnostics.jsonl", "images/reference", "checkpoints/9", "checkpoints/10/state/_METADATA",
                 "checkpoints/10/data/process_0-of-1.json"):
        assert (run / name).exists(), name
    assert not (run / "LOCK").exists()  # released on both ways out
    assert sorted(p.name for p in (run / "images").iterdir()) == ["reference", "step_0000005", "step_0000010"]
    assert any(p.name.startswith("events") for p in (run / "tb").iterdir())
    assert (out / "summary.md").exists() and list((out / "embedded" / "images").iterdir())
    steps = [int(line.split(",")[0]) for line in (run / "metrics_train.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 10  # the resumed logs read as one run
    # Nothing was written under the working directory (e.g. a mangled "gs:/bucket/run").
    assert not any(pathlib.Path.cwd().iterdir())
    # Orbax and TensorStore saw the URL itself.
    assert reached and all(p.startswith(f"{URL}/checkpoints") for p in reached), reached

    state, step = load_state(URL)
    ref_state, ref_step = load_state(reference_run)
    assert step == ref_step == 10
    assert_trees_equal(state, ref_state)


def test_orbax_receives_the_url(tmp_path, monkeypatch):
    """Without the local mapping, the URL goes to Orbax's own GCS code (which needs the cloud
    client, absent here): the path was not turned into a local one on the way."""
    pytest.importorskip("fsspec")
    try:
        from google.cloud import storage  # noqa: F401
        pytest.skip("google-cloud-storage is installed: Orbax would contact GCS")
    except ImportError:
        pass
    cloud_fake.install(monkeypatch, tmp_path / "gcs")
    from iln_jax.train import checkpoint
    monkeypatch.undo()  # keep the stand-in file system registered, drop the Orbax mapping
    cloud_fake.LocalBackedGCS.root = str(tmp_path / "gcs")
    with pytest.raises(ImportError, match="storage"):
        checkpoint.Checkpointer(f"{URL}/checkpoints", max_to_keep=1, save_every=1)
    assert not (pathlib.Path.cwd() / "gs:").exists()

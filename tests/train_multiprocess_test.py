"""Multi-host data parallelism: two local processes (4 CPU devices each, gloo collectives) train
together, each reading its own half of every global batch, and checkpoint cooperatively: the whole
loop of a pod, on a ``gs://`` work directory (tests/cloud_fake.py).

1. ``mesh`` mode on ``gs://bucket/multi/0``, 12 steps, validation and diagnostics every 5 steps and
   at the last (on the mesh, both processes), batches prefetched to the devices, metrics fetched every 2 steps.
   Process 1 alone gets SIGTERM after step 3; the processes agree (coordination service, every 10
   steps) and both checkpoint step 10 and stop.
2. Both processes restart: the mesh run resumes from step 10 to 12, then a ``pmap`` run of 4 steps.

In both modes the two processes must end with identical parameters, equal to a single-process run
on 8 devices (the same global batches), the checkpoint they wrote together must hold those
parameters, and the mesh run's validation must score what the single-process run scores.
"""
import json

import jax
import numpy as np
import portpicker
from etils import epath

import cloud_fake
from iln_jax.train import train_and_evaluate
from iln_jax.train.checkpoint import load_state
from iln_jax.train.state import host_copy
from train_util import finish, start_worker, tiny_config

SPEC = "configs/swinir.py:tiny=1"
MESH = {"train.num_steps": 12, "train.parallel": "mesh", "eval.every": 5, "train.diagnostics_every": 5,
        "train.checkpoint_every": 6}
PMAP = {"train.num_steps": 4, "train.parallel": "pmap", "eval.every": -1}
URL = "gs://bucket/multi"


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _pair(overrides, workdir, tmp_path, *, dump, term_at=(0, 0)):
    port = portpicker.pick_unused_port()
    return [start_worker(SPEC, overrides, workdir, num_devices=4, coordinator=f"localhost:{port}", num_processes=2,
                         process_id=i, dump=str(tmp_path / f"{dump}_p{i}"), term_at=term_at[i],
                         faults={"fake-gcs": tmp_path / "gcs"}) for i in range(2)]


def test_two_processes_match_one(tmp_path, monkeypatch):
    cloud_fake.install(monkeypatch, tmp_path / "gcs")
    preempted = _pair([MESH], f"{URL}/0", tmp_path, dump="unused", term_at=(0, 3))
    # Single-process references (8 devices in this process), computed while the workers run.
    refs, ref_summaries = [], []
    for i, run in enumerate((MESH, PMAP)):
        ref = {}

        def keep_final(step, state, ref=ref, last=run["train.num_steps"]):
            if step == last:
                ref.update(_flat(host_copy(state.params)))

        ref_summaries.append(train_and_evaluate(tiny_config(SPEC, **run), tmp_path / f"single_{i}",
                                                on_step=keep_final))
        refs.append(ref)
    for code, out in (finish(p) for p in preempted):
        assert code == 0 and '"status": "preempted", "final_step": 10' in out, out

    resumed = _pair([MESH, PMAP], URL, tmp_path, dump="params")
    for code, out in (finish(p) for p in resumed):
        assert code == 0 and out.count("SUMMARY") == 2 and '"start_step": 10' in out, out

    for i, mode in enumerate(("mesh", "pmap")):
        p0, p1 = (dict(np.load(tmp_path / f"params_p{pid}_{i}.npz")) for pid in range(2))
        assert p0.keys() == p1.keys() == refs[i].keys()
        saved, step = load_state(f"{URL}/{i}")
        saved = _flat(saved["params"])
        assert step == (MESH, PMAP)[i]["train.num_steps"]
        for k in p0:
            np.testing.assert_array_equal(p0[k], p1[k], err_msg=f"{mode}: hosts disagree on {k}")
            np.testing.assert_array_equal(saved[k], p0[k], err_msg=f"{mode}: checkpoint differs on {k}")
            np.testing.assert_allclose(p0[k], refs[i][k], rtol=2e-5, atol=2e-6,
                                       err_msg=f"{mode}: 2 processes != 1 process on {k}")

    run = epath.Path(f"{URL}/0")
    summary = json.loads((run / "summary.json").read_text())
    for tag, scores in ref_summaries[0]["validation"].items():
        assert abs(summary["validation"][tag]["psnr"] - scores["psnr"]) < 1e-3, (tag, summary, scores)
    assert sorted(p.name for p in (run / "images").iterdir()) == ["reference", "step_0000005", "step_0000010",
                                                                  "step_0000012"]
    diag_steps = [json.loads(line)["step"] for line in (run / "diagnostics.jsonl").read_text().splitlines()]
    assert diag_steps == [5, 10, 12]  # every 5 steps and at the last
    assert not (run / "LOCK").exists()

"""Multi-host data parallelism: two local processes (4 CPU devices each, gloo collectives) train
together, each reading its own half of every global batch, and checkpoint cooperatively.

In both parallel modes the two processes must end with identical parameters, equal to a
single-process run on 8 devices (the same global batches), and the checkpoint they wrote together
must hold those parameters. One pair of worker processes runs both modes, one after the other.
"""
import jax
import numpy as np
import portpicker

from iln_jax.train import train_and_evaluate
from iln_jax.train.checkpoint import load_state
from iln_jax.train.state import host_copy
from train_util import finish, start_worker, tiny_config

SPEC = "configs/swinir.py:tiny=1"
STEPS = 4
MODES = ("mesh", "pmap")


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_two_processes_match_one(tmp_path):
    runs = [{"train.num_steps": STEPS, "train.parallel": mode, "eval.every": -1} for mode in MODES]
    port = portpicker.pick_unused_port()
    procs = [start_worker(SPEC, runs, tmp_path / "multi", num_devices=4, coordinator=f"localhost:{port}",
                          num_processes=2, process_id=i, dump=str(tmp_path / f"params_p{i}"))
             for i in range(2)]
    # Single-process references (8 devices in this process), computed while the workers run.
    refs = []
    for i, run in enumerate(runs):
        ref = {}
        def keep_final(step, state, ref=ref):
            if step == STEPS:
                ref.update(_flat(host_copy(state.params)))

        train_and_evaluate(tiny_config(SPEC, **run), tmp_path / f"single_{i}", on_step=keep_final)
        refs.append(ref)
    for code, out in (finish(p) for p in procs):
        assert code == 0 and out.count("SUMMARY") == len(MODES), out

    for i, mode in enumerate(MODES):
        p0, p1 = (dict(np.load(tmp_path / f"params_p{pid}_{i}.npz")) for pid in range(2))
        assert p0.keys() == p1.keys() == refs[i].keys()
        saved, step = load_state(tmp_path / "multi" / str(i))
        saved = _flat(saved["params"])
        assert step == STEPS
        for k in p0:
            np.testing.assert_array_equal(p0[k], p1[k], err_msg=f"{mode}: hosts disagree on {k}")
            np.testing.assert_array_equal(saved[k], p0[k], err_msg=f"{mode}: checkpoint differs on {k}")
            np.testing.assert_allclose(p0[k], refs[i][k], rtol=2e-5, atol=2e-6,
                                       err_msg=f"{mode}: 2 processes != 1 process on {k}")

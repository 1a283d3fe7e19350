"""How the Checkpointer hands a replicated state to Orbax: small arrays are saved whole by one replica
(no per-device slice ops), large ones still replica-parallel; the items written are those of Orbax's
default handler (only the chunking of the bytes differs), and each reads the other's checkpoints."""
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from iln_jax.train import checkpoint
from iln_jax.train.checkpoint import Checkpointer


def _replicated_state():
    """A few leaves shaped like a tiny model's (a kernel, a bias, a scalar step), on all 8 devices."""
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    tree = {"kernel": rng.standard_normal((3, 3, 8, 16)).astype(np.float32),
            "bias": rng.standard_normal(16).astype(np.float32), "step": np.int32(7)}
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def _save(directory, state):
    ckpt = Checkpointer(directory, max_to_keep=2, save_every=1)
    ckpt.save(1, state, force=True)
    ckpt.close()


def _files(step_dir):
    return sorted(str(p.relative_to(step_dir)) for p in step_dir.rglob("*") if p.is_file())


@pytest.fixture
def default_handler():
    """Orbax's own jax.Array handler, put back after the test (the Checkpointer replaces it)."""
    before = ocp.type_handlers.get_type_handler(jax.Array)
    yield before
    ocp.type_handlers.register_type_handler(jax.Array, before, override=True)


def test_small_replicated_arrays_are_saved_without_slicing(tmp_path, default_handler):
    assert jax.device_count() == 8
    state = _replicated_state()
    compiled = []
    listener = lambda event, duration, fun_name=None, **_: compiled.append(fun_name) if event.endswith(
        "backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        _save(tmp_path / "ours", state)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not [name for name in compiled if "slice" in name], compiled
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    assert handler._min_slice_bytes_for_replica_parallel == checkpoint.MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL
    assert handler._use_replica_parallel == default_handler._use_replica_parallel  # large arrays as before
    restored, step = checkpoint.load_state(tmp_path / "ours")
    assert step == 1
    for key, value in state.items():
        np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(value))


def test_both_handlers_write_the_same_items_and_read_each_others_checkpoints(tmp_path, default_handler, monkeypatch):
    """Only how the bytes are chunked differs (fewer data files without the slices); a checkpoint written
    before this handler (or by Orbax's default) restores through it, and the other way round."""
    state = _replicated_state()
    _save(tmp_path / "ours", state)
    ocp.type_handlers.register_type_handler(jax.Array, default_handler, override=True)
    monkeypatch.setattr(checkpoint, "_use_whole_small_arrays", lambda: None)
    _save(tmp_path / "default", state)
    metadata_files = lambda run: [f for f in _files(run / "1") if "/d/" not in f and not f.startswith("state/d/")]
    assert metadata_files(tmp_path / "ours") == metadata_files(tmp_path / "default")
    monkeypatch.undo()
    expected = {k: np.asarray(v) for k, v in state.items()}
    # read by Orbax's default handler (still registered), then by ours
    for written_by, register_ours in (("ours", False), ("default", True)):
        if register_ours:
            checkpoint._use_whole_small_arrays()
        restored, _ = checkpoint.load_state(tmp_path / written_by)
        jax.tree.map(np.testing.assert_array_equal, {k: np.asarray(v) for k, v in restored.items()}, expected)

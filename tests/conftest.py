"""Test-wide JAX setup: 8 virtual CPU devices (for data-parallel tests) and the paths of test data."""
import os
import pathlib
import sys

import xla_flags

sys.dont_write_bytecode = False  # as the processes the suite starts (xla_flags.process_env): cache bytecode

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", xla_flags.flags_for(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from iln_jax import host_memory  # noqa: E402

host_memory.configure()  # as train.py does, before JAX starts its backends

import jax  # noqa: E402
import pytest  # noqa: E402

from iln_jax import parity  # noqa: E402

# Goldens compare with PyTorch's exact float32: no TF32 / bfloat16-pass matmuls when the suite runs on
# a GPU or TPU (JAX_PLATFORMS=cuda); on the CPU this changes nothing, bit for bit.
parity.set_parity_precision()

# Tests check numerics and behaviour, not speed: XLA's optimisation passes triple compile time
# of the many tiny model variants the suite builds, and change results only at round-off level.
jax.config.update("jax_disable_most_optimizations", True)

import train_util  # noqa: E402

train_util.use_test_cache()

DATA_DIR = pathlib.Path(__file__).parent / "data"

# The slow tier (``-m slow``; ``-m "not slow"`` is the quick one): whole training runs, programs started
# as a user starts them, fault injection, several processes. Single slow cases elsewhere (the U-Net
# goldens) carry the mark themselves. tests/README.md says what each file guards.
INTEGRATION_FILES = {
    "accelerator_test.py", "cli_errors_test.py", "cloud_paths_test.py", "compare_train_test.py",
    "compile_cache_test.py", "eval_end_to_end_test.py", "experiments_grid_test.py", "faults_checkpoint_test.py",
    "faults_disk_test.py", "faults_input_test.py", "faults_kill_test.py", "faults_lock_test.py",
    "preemption_guard_test.py", "readme_test.py", "scan_resume_test.py", "train_multiprocess_test.py",
    "train_progressive_test.py", "train_resume_test.py", "user_norm_test.py",
}
assert all((DATA_DIR.parent / name).exists() for name in INTEGRATION_FILES), "INTEGRATION_FILES names a missing file"


# The longest tests (several processes, whole runs) go first, so that with ``-n 2`` none of them
# starts last and leaves the other worker idle while it ends.
LONGEST_FIRST = ("train_multiprocess_test.py", "faults_kill_test.py", "readme_test.py", "compare_train_test.py",
                 "experiments_grid_test.py", "accelerator_test.py", "faults_disk_test.py", "cli_errors_test.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in INTEGRATION_FILES:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keeps its order


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> pathlib.Path:
    """The work directory of one uninterrupted tiny run (``train_util.REFERENCE_OVERRIDES``), the
    reference that interrupted and resumed runs must equal bit for bit (shared by the fault tests)."""
    from iln_jax.train import train_and_evaluate
    from train_util import REFERENCE_OVERRIDES, REFERENCE_SPEC, tiny_config
    workdir = tmp_path_factory.mktemp("reference")
    train_and_evaluate(tiny_config(REFERENCE_SPEC, **REFERENCE_OVERRIDES), workdir)
    return workdir

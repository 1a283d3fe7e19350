"""A full disk, a failed asynchronous save, a failed log write: the run stops at once with one line
naming the path, keeps every checkpoint it saved, and resumes exactly once there is room again.

The real disk-full test mounts a small tmpfs (needs root, or skips). The always-on variant
injects the failure at the system-call level without privileges: RLIMIT_FSIZE makes every write
that grows a file past a limit fail (EFBIG), which fails the checkpoint's array file in Orbax's
background thread, as a full disk does.
"""
import re
import subprocess

import jax
import pytest

from iln_jax.errors import StorageError
from iln_jax.train import train_and_evaluate
from iln_jax.train.checkpoint import load_state
from iln_jax.train.logging import MetricWriter
from train_util import REFERENCE_OVERRIDES, REFERENCE_SPEC as SPEC, assert_trees_equal, finish, start_worker, tiny_config

OVERRIDES = {**REFERENCE_OVERRIDES, "train.checkpoint_every": 2, "train.max_to_keep": 1, "train.log_every": 1}


def _steps(out: str) -> list[int]:
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("STEP ")]


def _resume_and_compare(workdir, reference_run, first_step: int):
    summary = train_and_evaluate(tiny_config(SPEC, **OVERRIDES), workdir)
    assert summary["start_step"] == first_step and summary["final_step"] == 10
    assert_trees_equal(load_state(workdir)[0], load_state(reference_run)[0])


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_stops_with_one_line_and_loses_nothing(small_disk, reference_run):
    workdir = small_disk / "run"
    code, out = finish(start_worker(SPEC, OVERRIDES, workdir, num_devices=jax.device_count(),
                                    faults={"fill-disk-at": 3}), timeout=120)
    errors = [line for line in out.splitlines() if "error:" in line]
    assert code == 1 and len(errors) == 1 and "Traceback" not in out, out
    assert re.fullmatch(rf"\[worker\] error: (checkpoint step \d+ could not be saved to|cannot write) {workdir}/\S+: "
                        r"No space left on device; stopping.*", errors[0]), errors[0]
    assert max(_steps(out)) <= 4, out  # stopped at the first write after the disk filled up
    assert load_state(workdir)[1] == 2 and not (workdir / "LOCK").exists()
    (workdir / "FILLER").unlink()  # room again: the same command resumes exactly
    _resume_and_compare(workdir, reference_run, first_step=2)


def test_failed_background_save_stops_promptly_and_keeps_the_saved_checkpoint(tmp_path, reference_run):
    """max_to_keep=1: Orbax alone would have deleted step 2 when it started saving step 4."""
    workdir = tmp_path / "run"
    code, out = finish(start_worker(SPEC, OVERRIDES, workdir, num_devices=jax.device_count(),
                                    faults={"fsize-limit-at": "3:16384"}), timeout=120)
    errors = [line for line in out.splitlines() if "error:" in line]
    assert code == 1 and len(errors) == 1 and "Traceback" not in out, out
    assert errors[0] == (f"[worker] error: checkpoint step 4 could not be saved to {workdir}/checkpoints/4: File too "
                         f"large; stopping (the saved checkpoints are kept (newest: step 2); re-run the same command "
                         f"to resume from there once the storage is fixed)"), errors[0]
    assert max(_steps(out)) <= 5, out  # noticed within a step of the failure, not a checkpoint interval later
    assert load_state(workdir)[1] == 2 and not (workdir / "LOCK").exists()
    _resume_and_compare(workdir, reference_run, first_step=2)


def test_failed_log_write_names_the_file(tmp_path):
    writer = MetricWriter(tmp_path)
    (tmp_path / "metrics_train.csv").mkdir()  # any write error: here EISDIR
    with pytest.raises(StorageError, match=rf"cannot write {tmp_path}/metrics_train.csv: Is a directory; stopping"):
        writer.write_scalars(1, {"loss": 0.5})
    writer.close()

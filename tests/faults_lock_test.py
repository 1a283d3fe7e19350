"""The work-directory lock: one run per directory, stale locks reclaimed, released on every exit.

Unit tests of ``WorkdirLock`` with forged lock records (dead pid, other host, reboot, reused pid),
the loop's use of it (refusal before anything is written; release after an exception, SIGTERM
and Ctrl-C), and two real runs started at once on one directory.
"""
import json
import os
import signal
import socket
import subprocess
import time

import jax
import pytest

from iln_jax.errors import WorkdirBusyError
from iln_jax.train import train_and_evaluate
from iln_jax.train.workdir_lock import LOCK_NAME, WorkdirLock, _pid_start
from train_util import finish, start_worker, tiny_config

SPEC = "configs/swinir.py:tiny=1"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _forge(workdir, age_seconds: float = 0.0, **fields) -> None:
    record = {"run_id": "forged", "host": socket.gethostname(), "pid": os.getpid(),
              "pid_start": _pid_start(os.getpid()), "boot_id": WorkdirLock(workdir).record["boot_id"],
              "started": "2020-01-01T00:00:00Z", "command": "python train.py (forged)", **fields}
    path = workdir / LOCK_NAME
    path.write_text(json.dumps(record))
    if age_seconds:
        t = time.time() - age_seconds
        os.utime(path, (t, t))


@pytest.mark.parametrize("fields, age, why", [
    (dict(pid=None), 0, "is not running"),                            # same host, process gone
    (dict(host="elsewhere"), 3600, "no heartbeat from host elsewhere"),  # other host, silent for an hour
    (dict(boot_id="an-earlier-boot"), 0, "rebooted"),                  # same host, machine rebooted
    (dict(pid_start="1"), 0, "now belongs to another process"),       # same host, pid reused
])
def test_stale_lock_is_reclaimed(tmp_path, fields, age, why):
    if fields.get("pid", 0) is None:
        fields["pid"] = _dead_pid()
    _forge(tmp_path, age, **fields)
    with WorkdirLock(tmp_path) as lock:
        assert why in lock.reclaimed and "forged" in lock.reclaimed
        assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == lock.run_id
    assert not (tmp_path / LOCK_NAME).exists()
    assert not list(tmp_path.glob("LOCK.*"))  # no private files left behind


@pytest.mark.parametrize("fields, message", [
    (dict(), r"in use by run forged \(host .*, pid \d+, started 2020-01-01T00:00:00Z: python train.py \(forged\)\)"),
    (dict(host="elsewhere"), r"counts as stale after 300 s without heartbeat \(last one \d+ s ago\)"),
])
def test_live_lock_refuses_naming_the_holder(tmp_path, fields, message):
    _forge(tmp_path, **fields)
    with pytest.raises(WorkdirBusyError, match=message):
        WorkdirLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == "forged"  # untouched


def test_unreadable_lock_is_stale_only_when_old(tmp_path):
    (tmp_path / LOCK_NAME).write_text("")
    with pytest.raises(WorkdirBusyError, match="unreadable lock record"):
        WorkdirLock(tmp_path).acquire()
    t = time.time() - 3600
    os.utime(tmp_path / LOCK_NAME, (t, t))
    with WorkdirLock(tmp_path) as lock:
        assert "unreadable lock record untouched" in lock.reclaimed


def test_a_lock_taken_over_stops_its_holder_and_is_not_removed_by_it(tmp_path):
    lock = WorkdirLock(tmp_path, heartbeat_seconds=0.05)
    lock.acquire()
    lock.check()
    _forge(tmp_path, run_id="intruder")  # e.g. a run on another host that judged this one stale
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            lock.check()
        except WorkdirBusyError as e:
            assert "lost its work directory lock" in str(e) and "intruder" in str(e)
            break
        time.sleep(0.05)
    else:
        pytest.fail("the heartbeat did not notice the lost lock")
    lock.release()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == "intruder"


def test_busy_workdir_refuses_before_writing_anything(tmp_path):
    with WorkdirLock(tmp_path):
        with pytest.raises(WorkdirBusyError, match=f"the work directory {tmp_path} is in use by run"):
            train_and_evaluate(tiny_config(SPEC), tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]


@pytest.mark.parametrize("fault", [RuntimeError("boom"), KeyboardInterrupt(), "sigterm"])
def test_lock_is_released_on_every_exit_path(tmp_path, fault):
    config = tiny_config(SPEC, **{"train.num_steps": 3, "eval.every": -1, "train.diagnostics_every": 0})

    def on_step(step, state):
        assert (tmp_path / LOCK_NAME).exists()
        if step == 2:
            if fault == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise fault

    if fault == "sigterm":
        assert train_and_evaluate(config, tmp_path, on_step=on_step)["status"] == "preempted"
    else:
        with pytest.raises(type(fault)):
            train_and_evaluate(config, tmp_path, on_step=on_step)
    assert not (tmp_path / LOCK_NAME).exists()


def test_two_runs_started_together_on_one_workdir(tmp_path):
    """Twice the same command at once: one trains, the other stops naming it; no row is doubled.

    Whichever run gets the lock waits after its first step until the other one has exited, so the
    two always overlap."""
    workdir, go = tmp_path / "run", tmp_path / "go"
    overrides = {"train.num_steps": 4, "eval.every": -1, "train.log_every": 1}
    procs = [start_worker(SPEC, overrides, workdir, num_devices=jax.device_count(), faults={"wait-at": f"1:{go}"})
             for _ in range(2)]
    while all(p.poll() is None for p in procs):
        time.sleep(0.1)
    go.touch()
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _ in results)
    outputs = "\n".join(out for _, out in results)
    assert codes == [0, 1], outputs
    refused = next(out for code, out in results if code == 1)
    assert f"[worker] error: the work directory {workdir} is in use by run" in refused, refused
    assert "Traceback" not in refused
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert not (workdir / LOCK_NAME).exists()

"""One run per work directory: a lock file, held for the whole run.

``<workdir>/LOCK`` is a small JSON record naming its holder: ``run_id`` (random, one per run),
``host``, ``pid``, ``pid_start`` (the process's start time from ``/proc``, so a reused pid is not
mistaken for the holder), ``boot_id`` (a rebooted machine holds nothing), ``started`` and
``command``. Rules:

* **Taking it** is an atomic create: the record is written to a private file, then hard-linked
  to ``LOCK`` (``link`` fails if ``LOCK`` exists; no reader ever sees a half-written record).
  A second run on a busy directory stops with :class:`WorkdirBusyError` naming the holder.
* **Heartbeat**: the holder touches ``LOCK`` every ``heartbeat_seconds`` from a daemon thread,
  after checking that the record is still its own. If it is not (the lock was reclaimed or
  deleted), :meth:`WorkdirLock.check` raises and the run stops rather than mixing with another.
* **Stale locks** (the holder was SIGKILLed, its machine died) are reclaimed when the record
  proves the holder gone: same host and boot and the pid is not running (or runs another
  program), same host after a reboot, or, from another host, no heartbeat for
  ``stale_seconds``. A fresh record from another host is respected, since its process cannot be
  probed; the message says when it would count as stale.
* **Reclaiming** renames the stale ``LOCK`` to a private name, then checks that what it moved is
  the record it judged stale; if a new holder had replaced it in between, the record is linked
  back. Then it takes the lock with the atomic create as above, so two reclaimers never both hold it.
* **Releasing** (every exit path: normal end, exception, SIGTERM, Ctrl-C; see
  ``train_and_evaluate``) removes ``LOCK`` only if it still holds this run's record.
* **Several processes** (multi-host): only process 0 takes and holds the lock; it tells the
  others the outcome through a collective broadcast of the error text (empty when it holds
  it), so every process stops with the same message when the directory is busy.

Only ``_create_exclusive``, ``_read``, ``_touch``, ``_move`` and ``_remove`` touch the file
system, through ``etils.epath``, so a URL work directory (``gs://...``) takes the same path. An
object store has no ``link``, no ``utime`` and no atomic rename, so there:

* the atomic create is GCS's conditional create (``if_generation_match=0``) when the
  ``google-cloud-storage`` client is installed (``requirements-cloud.txt``); without it (other
  stores, or a stand-in file system) it is *check, write, wait, read back*: two runs starting
  within the same second on one URL could both read back their own record; that window is the
  one thing not atomic there, and the heartbeat check below stops the loser at its first beat;
* the heartbeat rewrites the record with a ``heartbeat`` time (object stores do not all report a
  modification time), and staleness is judged from it;
* ``_move`` is a copy + delete; reclaiming re-checks what it moved as on a local disk.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from iln_jax import paths
from iln_jax.errors import WorkdirBusyError

log = logging.getLogger(__name__)

LOCK_NAME = "LOCK"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0
_MESSAGE_BYTES = 2048


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" where /proc is not available)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may contain spaces


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(record: Optional[dict]) -> str:
    if not record:
        return "an unreadable lock record"
    return (f"run {record.get('run_id', '?')} (host {record.get('host', '?')}, pid {record.get('pid', '?')}, "
            f"started {record.get('started', '?')}: {record.get('command', '?')})")


# -- the file-system operations (the only ones; see the module docstring) -----------------------

URL_READBACK_SECONDS = 0.5  # the wait of the best-effort create on object stores


def _create_exclusive(path: epath.Path, text: str) -> bool:
    """Create ``path`` holding ``text`` atomically; False if it exists."""
    if paths.is_url(path):
        return _create_exclusive_url(path, text)
    private = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    private.write_text(text)
    try:
        os.link(private, path)
        return True
    except FileExistsError:
        return False
    finally:
        private.unlink(missing_ok=True)


def _create_exclusive_url(path: epath.Path, text: str) -> bool:
    url = os.fspath(path)
    if url.startswith("gs://"):
        try:
            from google.api_core import exceptions
            from google.cloud import storage
        except ImportError:
            storage = None
        if storage is not None:
            bucket, _, name = url[len("gs://"):].partition("/")
            try:
                storage.Client().bucket(bucket).blob(name).upload_from_string(text, if_generation_match=0)
                return True
            except exceptions.PreconditionFailed:
                return False
    if path.exists():  # best effort (see the module docstring)
        return False
    path.write_text(text)
    time.sleep(URL_READBACK_SECONDS)
    try:
        return path.read_text() == text
    except FileNotFoundError:
        return False


def _read(path: epath.Path) -> tuple[Optional[dict], float]:
    """``(record or None if unreadable, time of the last heartbeat)``; FileNotFoundError if absent."""
    mtime = path.stat().mtime if paths.is_url(path) else os.stat(path).st_mtime
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None, mtime
    if not isinstance(record, dict):
        return None, mtime
    return record, float(record.get("heartbeat", mtime)) if paths.is_url(path) else mtime


def _touch(path: epath.Path, record: dict) -> None:
    if paths.is_url(path):
        path.write_text(_record_text({**record, "heartbeat": time.time()}))
    else:
        os.utime(path)


def _move(src: epath.Path, dst: epath.Path) -> None:
    src.rename(dst)


def _remove(path: epath.Path) -> None:
    path.unlink(missing_ok=True)


def _record_text(record: dict) -> str:
    return json.dumps(record, indent=1) + "\n"


# -----------------------------------------------------------------------------------------------

def stale_reason(record: Optional[dict], mtime: float, *, stale_seconds: float,
                 now: Optional[float] = None) -> Optional[str]:
    """Why the lock's holder is certainly gone, or None if it may still be running."""
    age = (time.time() if now is None else now) - mtime
    if record is None:
        return f"unreadable lock record untouched for {age:.0f} s" if age > stale_seconds else None
    if record.get("host") == socket.gethostname():
        boot = _boot_id()
        if boot and record.get("boot_id") and record["boot_id"] != boot:
            return "its machine has rebooted since"
        pid = int(record.get("pid", -1))
        if pid > 0 and not _pid_running(pid):
            return f"process {pid} is not running"
        if pid > 0 and record.get("pid_start") and _pid_start(pid) not in ("", record["pid_start"]):
            return f"pid {pid} now belongs to another process"
        return None
    if age > stale_seconds:
        return f"no heartbeat from host {record.get('host')} for {age:.0f} s"
    return None


class WorkdirLock:
    """Context manager holding ``<workdir>/LOCK`` (process 0 only; see the module docstring)."""

    def __init__(self, workdir: str | Path, *, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 stale_seconds: float = STALE_SECONDS):
        self.path = paths.as_path(workdir) / LOCK_NAME
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.record = {"run_id": uuid.uuid4().hex[:12], "host": socket.gethostname(), "pid": os.getpid(),
                       "pid_start": _pid_start(os.getpid()), "boot_id": _boot_id(), "started": _now(),
                       "command": " ".join(sys.argv)[:300]}
        if paths.is_url(self.path):
            self.record["heartbeat"] = time.time()
        self.held = False
        self.reclaimed: Optional[str] = None  # why a stale lock was taken over, if one was
        self._lost: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def acquire(self) -> None:
        """Take the lock (process 0), tell every process the outcome; raise if the directory is busy."""
        error = ""
        if jax.process_index() == 0:
            try:
                self._acquire_locally()
            except WorkdirBusyError as e:
                error = str(e)
        if jax.process_count() > 1:
            error = _broadcast_text(error)
        if error:
            raise WorkdirBusyError(error)

    def _acquire_locally(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = _record_text(self.record)
        for _ in range(5):
            if _create_exclusive(self.path, text):
                self.held = True
                self._start_heartbeat()
                return
            try:
                holder, mtime = _read(self.path)
            except FileNotFoundError:
                continue  # released (or reclaimed) in between: try again
            reason = stale_reason(holder, mtime, stale_seconds=self.stale_seconds)
            if reason is None:
                raise WorkdirBusyError(self._busy_message(holder, mtime))
            if self._reclaim(holder):
                self.reclaimed = f"{describe(holder)}: {reason}"
                log.warning("work directory %s: took over the stale lock of %s", self.path.parent, self.reclaimed)
        raise WorkdirBusyError(f"could not lock the work directory {self.path.parent}: its lock file "
                               f"{self.path} keeps changing (several runs starting at once?)")

    def _reclaim(self, judged: Optional[dict]) -> bool:
        """Move the stale record aside if it is still the one judged stale (see the docstring)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{self.run_id}")
        try:
            _move(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            moved, _ = _read(aside)
        except FileNotFoundError:
            moved = None
        if moved != judged:  # a new holder replaced it after we read it: give it back
            # If a third run took LOCK meanwhile, this fails; the holder we moved then sees the
            # loss at its next heartbeat and stops.
            _create_exclusive(self.path, aside.read_text())
            _remove(aside)
            return False
        _remove(aside)
        return True

    def _busy_message(self, holder: Optional[dict], mtime: float) -> str:
        age = time.time() - mtime
        same_host = holder is not None and holder.get("host") == socket.gethostname()
        hint = ("" if same_host else
                f"; a lock from another host counts as stale after {self.stale_seconds:.0f} s without "
                f"heartbeat (last one {age:.0f} s ago)")
        return (f"the work directory {self.path.parent} is in use by {describe(holder)}{hint}. "
                f"Use another --workdir, or wait for that run to end (if it is certainly dead, delete {self.path})")

    # -- holding -------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="workdir_lock_heartbeat", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            problem = self._verify()
            if problem:
                self._lost = problem
                log.error("work directory lock lost: %s", problem)
                return
            try:
                _touch(self.path, self.record)
            except OSError as e:  # e.g. a full disk: the record is still ours, keep trying
                log.warning("could not refresh the work directory lock %s: %s", self.path, e)

    def _verify(self) -> Optional[str]:
        try:
            record, _ = _read(self.path)
        except FileNotFoundError:
            return f"{self.path} was deleted while this run held it"
        except OSError:
            return None  # unreadable for now (I/O trouble); the next heartbeat checks again
        if not record or record.get("run_id") != self.run_id:
            return f"{self.path} now belongs to {describe(record)}"
        return None

    def check(self) -> None:
        """Raise if the lock was lost (called by the loop every step; costs a flag check)."""
        if self._lost:
            raise WorkdirBusyError(f"stopping: this run lost its work directory lock ({self._lost}); "
                                   f"another run may be writing {self.path.parent}")

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        self.held = False
        if self._verify() is None:
            _remove(self.path)


def _broadcast_text(text: str) -> str:
    """Process 0's ``text`` on every process (a fixed-size byte array through a collective)."""
    data = text.encode()[:_MESSAGE_BYTES - 4]
    buf = np.zeros(_MESSAGE_BYTES, np.uint8)
    buf[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), np.uint8)
    buf[4:4 + len(data)] = np.frombuffer(data, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    n = int(np.frombuffer(out[:4].tobytes(), np.uint32)[0])
    return out[4:4 + n].tobytes().decode(errors="replace")

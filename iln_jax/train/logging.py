"""Run logs: TensorBoard events, CSV + JSON-lines metric files, and a tqdm progress bar.

Only process 0 writes. Layout under the work directory::

    tb/                 TensorBoard event files (scalars, validation images)
    metrics_train.csv   step, loss, grad_norm, param_norm, update_norm, lr, steps_per_sec, ...
    metrics_val.csv     step, <set>/psnr, <set>/ssim, ... (one row per validation)
    metrics.jsonl       every record of both, {"split": ..., "step": ..., ...}

When a run resumes from step k, rows and events after step k (written by the killed run) are
dropped, so the files read as one uninterrupted run.

Everything is written synchronously from the calling thread and flushed at every call, so a
failing write (a full disk, a lost mount) raises :class:`StorageError` naming the file at once.
(tensorboardX's ``SummaryWriter`` writes from a thread through a bounded queue; when that thread
dies on a full disk, the next ``add_*`` blocks forever. The event files are written by
:mod:`iln_jax.train.event_file`.)
"""
from __future__ import annotations

import csv
import functools
import io
import json
import math
import sys
import time
from typing import Callable, Optional, TextIO

import numpy as np
from etils import epath
from tqdm import tqdm

from iln_jax import paths
from iln_jax.errors import StorageError
from iln_jax.train.event_file import EventFile

SPLITS = ("train", "val")


def _finite_or_str(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


def storage_errors(describe: Callable[..., str]):
    """Decorator: an ``OSError`` of the wrapped write becomes a :class:`StorageError` whose
    message starts with ``describe(self, *args)`` (which names the file)."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except OSError as e:
                if isinstance(e, StorageError):
                    raise
                where = e.filename or describe(self, *args)
                raise StorageError(f"cannot write {where}: {e.strerror or e}; stopping") from None
        return inner
    return wrap


class MetricWriter:
    @storage_errors(lambda self, workdir, **kw: f"the metric logs in {workdir}")
    def __init__(self, workdir: paths.PathLike, *, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.workdir = paths.as_path(workdir)
        self._tb = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            _truncate_csv(self._csv_path(split), resume_step)
        _truncate_jsonl(self.workdir / "metrics.jsonl", resume_step)
        self._tb = EventFile(self.workdir / "tb", purge_step=resume_step + 1)

    def _csv_path(self, split: str) -> epath.Path:
        return self.workdir / f"metrics_{split}.csv"

    @storage_errors(lambda self, *a: f"the metric logs in {self.workdir}")
    def write_scalars(self, step: int, scalars: dict, split: str = "train") -> None:
        if not self.enabled:
            return
        row = {k: _finite_or_str(v) for k, v in scalars.items()}
        for k, v in row.items():
            if isinstance(v, float):
                self._tb.add_scalar(f"{split}/{k}", v, step)
        self._tb.flush()
        _append_csv(self._csv_path(split), {"step": step, **row})
        paths.append_text(self.workdir / "metrics.jsonl",
                          json.dumps({"split": split, "step": step, "time": time.time(), **row}) + "\n")

    @storage_errors(lambda self, *a: self._tb.path)
    def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """uint8 HWC images into TensorBoard."""
        if self.enabled:
            for name, img in images.items():
                self._tb.add_image(f"val/{name}", img, step)
            self._tb.flush()

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Close the event file; never raises (a failed final flush was reported by the write)."""
        if self._tb is not None:
            tb, self._tb = self._tb, None
            try:
                tb.close()
            except OSError:
                pass


def _csv_text(header: list, rows: list[dict], *, with_header: bool = True) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, header)
    if with_header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _append_csv(path: epath.Path, row: dict) -> None:
    header = None
    if path.exists():
        with path.open() as f:
            header = next(csv.reader(f), None)
    if header is not None and set(row) - set(header):
        # New columns (e.g. a new eval set): rewrite with the union of the columns.
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        header = header + [k for k in row if k not in header]
        path.write_text(_csv_text(header, rows + [row]))
        return
    paths.append_text(path, _csv_text(header or list(row), [row], with_header=header is None))


def _truncate_csv(path: epath.Path, step: int) -> None:
    if not path.exists():
        return
    reader = csv.DictReader(io.StringIO(path.read_text()))
    header, rows = reader.fieldnames, [r for r in reader if int(r["step"]) <= step]
    path.write_text(_csv_text(header or ["step"], rows))


def _truncate_jsonl(path: epath.Path, step: int) -> None:
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


class Progress:
    """Progress over the steps (steps/s, ETA, the latest loss and lr), shown from :meth:`start` on.

    On a terminal, a tqdm bar on stderr. On a file or a pipe (a log), one whole line per
    :meth:`update` in the bar's format instead: a bar redraws itself with carriage returns, which
    in a log end up inside the lines written between two redraws. :meth:`write` prints a line to
    stdout (above the bar). Disabled, everything but :meth:`write` does nothing.
    """

    def __init__(self, total: int, initial: int, *, enabled: bool, desc: str = "train",
                 stream: Optional[TextIO] = None):
        self.total, self.initial, self.desc, self.enabled = total, initial, desc, enabled
        self._stream = stream  # default: stderr, as tqdm
        self._bar = None
        self._lines: Optional[dict] = None  # line mode: {"n": steps done, "t0": start time}

    def start(self) -> None:
        if not self.enabled or self._bar is not None or self._lines is not None:
            return
        self._stream = self._stream or sys.stderr
        if self._stream.isatty():
            self._bar = tqdm(total=self.total, initial=self.initial, desc=self.desc, file=self._stream, unit="step",
                             dynamic_ncols=True, smoothing=0.1)
        else:
            self._lines = {"n": self.initial, "t0": time.monotonic()}

    def update(self, n: int = 1, postfix: Optional[dict] = None) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        elif self._lines is not None:
            self._lines["n"] += n
            line = tqdm.format_meter(self._lines["n"], self.total, time.monotonic() - self._lines["t0"],
                                     prefix=self.desc, unit="step", initial=self.initial,
                                     postfix=", ".join(f"{k}={v:.4g}" for k, v in (postfix or {}).items()) or None)
            print(line, file=self._stream, flush=True)

    def write(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        """End the bar (a final newline); the object is done afterwards."""
        if self._bar is not None:
            self._bar.close()
        self._bar, self._lines, self.enabled = None, None, False

"""What a user reads at the end of a run, as they meet it: every file a message names exists, a
preempted run says so (no empty validation table) and exits 143, a log file holds whole lines;
and the pieces that decide it (``train_steps``, the summary lines, the progress lines, the
non-finite message), called directly."""
import io
import json
import pathlib
import re
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from iln_jax.train.checkpoint import Checkpointer
from iln_jax.train.clock import TrainClock
from iln_jax.train.hooks import Hook, Hooks, NonFiniteCheck, NonFiniteLossError
from iln_jax.train.logging import Progress
from iln_jax.train.loop import train_steps
from iln_jax.train.summary import format_summary
from train_util import ROOT, tiny_config, worker_env

TINY = ["train.py", "--config", "configs/swinir.py:tiny=1"]


def _named_files(output: str) -> list[str]:
    """The files the end-of-run lines point to."""
    return re.findall(r"per-block diagnostics in (\S+);", output)


def test_short_run_records_diagnostics_at_its_last_step_and_logs_whole_lines(tmp_path):
    """Two steps, diagnostics every 1000 (the tiny default): the last step's are recorded, and the
    summary names the file. The progress bar is on and stdout/stderr go to one pipe, as into a
    log file: every line is whole (no carriage returns), the [val] lines start their line."""
    workdir = tmp_path / "run"
    done = subprocess.run([sys.executable, *TINY, "--workdir", str(workdir), "--config.train.num_steps=2",
                           "--config.train.log_every=1", "--config.eval.every=1", "--config.train.progress_bar=True"],
                          cwd=ROOT, env=worker_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    out = done.stdout
    assert done.returncode == 0, out
    assert "\r" not in out
    val = [ln for ln in out.splitlines() if "[val]" in ln]
    assert len(val) == 2 and all(ln.startswith("[val] step ") for ln in val), out
    assert re.search(r"^train: 100%\|.*\| 2/2 \[.*loss=", out, re.M), out
    assert _named_files(out) == [str(workdir / "diagnostics.jsonl")], out
    rows = [json.loads(ln) for ln in (workdir / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2]
    assert json.loads((workdir / "summary.json").read_text())["diagnostics"] == str(workdir / "diagnostics.jsonl")


def test_sigterm_says_preempted_without_a_validation_table_and_exits_143(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, *TINY, "--workdir", str(workdir), "--config.train.num_steps=100000",
                             "--config.eval.every=0"],
                            cwd=ROOT, env=worker_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # the start line is printed once the SIGTERM handler is in place
        lines.append(line)
        if "global batch" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=600)
    out = "".join(lines) + out
    assert proc.returncode == 143, out + err
    assert re.search(r"^== swinir_srx2_iln_tiny: preempted at step (\d+) ", out, re.M), out
    step = json.loads((workdir / "summary.json").read_text())["final_step"]
    assert f"not finished (SIGTERM): re-run the same command to continue from step {step}" in out
    assert "validation (" not in out and "model (" not in out, out
    assert all(pathlib.Path(f).exists() for f in _named_files(out)), out
    assert "Traceback" not in err, err


# -- the pieces, called directly ------------------------------------------------------------------

class _Batches:
    """Stands in for PhaseBatches: the step number is the batch."""

    def __init__(self, start):
        self.step, self.phase, self.stream = start, SimpleNamespace(batch_size=1, gt_size=8), None

    def next(self, step):
        self.step = step
        return {"step": step}, step


class _Record(Hook):
    def __init__(self, stop_at=None):
        self.seen, self.stop_at = [], stop_at

    def __call__(self, step):
        self.seen.append((step.number, step.state, step.last))
        return "preempted" if step.number == self.stop_at else None


def _add_one(state, batch, phase):
    return state + batch, {"loss": 0.0}


@pytest.mark.parametrize("start, stop_at, before, want", [
    (0, None, None, ([(1, 1, False), (2, 3, False), (3, 6, True)], 6, 3, None)),
    (1, 2, None, ([(2, 2, False)], 2, 2, "preempted")),
    (3, None, None, ([], 0, 3, None)),                        # resumed at the final step: nothing to run
    (0, None, "preempted", ([], 0, 0, "preempted")),          # SIGTERM during start-up
])
def test_train_steps_runs_each_step_then_its_hooks(start, stop_at, before, want):
    hook = _Record(stop_at)
    state, step, status = train_steps(0, start, 3, batches=_Batches(start), step_fn=_add_one,
                                      after_step=Hooks([hook], TrainClock()), stop=before)
    assert (hook.seen, state, step, status) == want


def test_preempted_summary_has_no_empty_table():
    config = tiny_config()
    summary = {"name": "run", "status": "preempted", "final_step": 3, "start_step": 0, "wall_seconds": 5.0,
               "workdir": "/w", "baseline": {"psnr": 31.0, "ssim": 0.9}, "validation": {}, "final_train_loss": 0.2}
    text = format_summary(summary, config)
    assert "not finished (SIGTERM): re-run the same command to continue from step 3" in text
    assert "validation" not in text and "bicubic" not in text
    completed = {**summary, "status": "completed", "validation": {"ema": {"psnr": 32.0, "ssim": 0.91}}}
    text = format_summary(completed, config)
    assert "not finished" not in text and re.search(r"^  model \(ema\) +32\.000 +0\.9100 +\(\+1\.000 dB\)$", text, re.M)


def test_progress_on_a_log_writes_whole_lines():
    log = io.StringIO()  # not a terminal
    progress = Progress(6, 2, enabled=True, stream=log)
    progress.start()
    progress.update(2, {"loss": 0.25, "lr": 2e-4})
    progress.update(2, {"loss": 0.125, "lr": 1e-4})
    progress.close()
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and lines[-1] == ""
    assert re.fullmatch(r"train:  67%\|.*\| 4/6 \[.*, loss=0\.25, lr=0\.0002\]", lines[0]), lines
    assert re.fullmatch(r"train: 100%\|.*\| 6/6 \[.*, loss=0\.125, lr=0\.0001\]", lines[1]), lines


def test_non_finite_check_names_the_step_its_window_and_the_last_checkpoint(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints", max_to_keep=1, save_every=1)
    check = NonFiniteCheck(ckpt)
    check([(3, {"loss": 0.5, "grad_norm": 1.0})])
    window = [(4, {"loss": 0.5, "grad_norm": 1.0}), (5, {"loss": float("nan"), "grad_norm": 1.0}),
              (6, {"loss": float("inf"), "grad_norm": float("nan")})]
    with pytest.raises(NonFiniteLossError) as e:
        check(window)
    ckpt.close()
    assert str(e.value).startswith("Non-finite training loss at step 5 (loss=nan, grad_norm=1.0; the first "
                                   "non-finite one of steps 4-6, whose metrics were fetched together); stopping. "
                                   "No checkpoint was saved yet (re-running starts from scratch). Lower optim.lr")

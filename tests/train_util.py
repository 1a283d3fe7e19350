"""Shared helpers of the training tests: tiny configs, the subprocess worker launcher, tree checks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

import xla_flags

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "train_worker.py"
# The training tests compile the same tiny programs many times (fresh jits per run, and in the
# subprocesses): a persistent compilation cache shared by all of them saves most of that. The suite
# turns it on in conftest.py (``use_test_cache``); the workers get it through their environment.
# "off": a worker testing the project's own default (compile_cache_test.py).
CACHE_DIR = os.environ.get("ILN_JAX_TEST_CACHE",
                           os.path.join(tempfile.gettempdir(), "iln_jax_test_xla_cache"))


def use_test_cache() -> None:
    """Point this process's JAX at the suite's persistent compilation cache (unless it is "off")."""
    if CACHE_DIR != "off":
        jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# The fault tests' uninterrupted reference (the ``reference_run`` fixture): 10 steps of the tiny
# SwinIR. Runs compared with it may change only keys that do not change the numbers
# (checkpointing, logging, the SIGTERM grace).
REFERENCE_SPEC = "configs/swinir.py:tiny=1"
REFERENCE_OVERRIDES = {"train.num_steps": 10, "eval.every": -1, "train.diagnostics_every": 0}


def tiny_config(spec: str = "configs/swinir.py:tiny=1", **overrides):
    """A locked tiny config with dotted-key overrides (``{"train.num_steps": 4}``)."""
    from iln_jax.train import load_config
    config = load_config(str(ROOT / spec))
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = config
        for p in path:
            node = node[p]
        node[last] = value
    return config


def worker_env(num_devices: int, cache_dir: str | None = CACHE_DIR) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    # PYTHONFAULTHANDLER: a worker that ``finish`` finds hung is aborted and prints every thread's stack.
    env.update(xla_flags.process_env(num_devices), PYTHONFAULTHANDLER="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    if cache_dir:
        env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def start_worker(spec: str, overrides: dict, workdir, *, num_devices: int, cache_dir=CACHE_DIR,
                 kill_at: int = 0, term_at: int = 0, coordinator: str = "", num_processes: int = 1,
                 process_id: int = 0, dump: str = "", faults: dict | None = None,
                 env: dict | None = None) -> subprocess.Popen:
    """``faults``: the worker's fault-injection options, e.g. ``{"kill-after": 1.5, "block-at": 3}``."""
    args = [sys.executable, str(WORKER), "--config", spec, "--overrides", json.dumps(overrides),
            "--workdir", str(workdir), "--kill-at", str(kill_at), "--term-at", str(term_at),
            "--coordinator", coordinator, "--num-processes", str(num_processes), "--process-id", str(process_id), "--dump", str(dump)]
    for name, value in (faults or {}).items():
        args += [f"--{name}", str(value)]
    return subprocess.Popen(args, cwd=ROOT, env={**worker_env(num_devices, cache_dir), **(env or {})},
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    """Wait for a worker; one still running after ``timeout`` s fails the test with its output and
    the stacks of its threads (SIGABRT -> faulthandler), so that a hang says where it hangs."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"worker still running after {timeout:g} s; its output and stacks:\n{out[-30000:]}") from None
    return proc.returncode, out


def host_tree(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def assert_trees_equal(a, b):
    """Bit-identical leaves (and the same structure)."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)

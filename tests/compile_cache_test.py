"""The persistent compilation cache is on by default (``<workdir>/compile_cache``): the second start
of a run loads its train step from the cache instead of compiling it (JAX's own cache-hit log)."""
import re

from train_util import finish, start_worker

SPEC = "configs/swinir.py:tiny=1"
OVERRIDES = {"train.num_steps": 2, "eval.every": -1, "train.diagnostics_every": 0}
# JAX persists only programs that took >= 1 s to compile; the tiny ones here take less.
ENV = {"ILN_JAX_TEST_CACHE": "off", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_DEBUG_LOG_MODULES": "jax._src.compiler"}
HIT = re.compile(r"Persistent compilation cache hit for '(jit_\w+)'")


def test_second_start_hits_the_cache(tmp_path):
    workdir = tmp_path / "run"
    code, out = finish(start_worker(SPEC, OVERRIDES, workdir, num_devices=2, cache_dir=None, env=ENV))
    assert code == 0 and f"compilation cache {workdir / 'compile_cache'}" in out, out
    entries = {p.name for p in (workdir / "compile_cache").iterdir()}
    step_entries = {e for e in entries if e.startswith("jit_train_step-")}
    assert step_entries, entries  # the train step was written
    code, out = finish(start_worker(SPEC, {**OVERRIDES, "train.num_steps": 4}, workdir, num_devices=2,
                                    cache_dir=None, env=ENV))
    assert code == 0, out
    hits = set(HIT.findall(out))
    assert any(e.startswith(h + "-") for h in hits for e in step_entries), (hits, step_entries)
    # Nothing new for the step: the resumed run compiled no program the first one had not.
    assert {p.name for p in (workdir / "compile_cache").iterdir() if p.name.startswith("jit_train_step-")} == step_entries

"""iln_jax.host_memory: XLA:CPU's scratch buffer is mapped once, not faulted in again at every execution."""
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from iln_jax import host_memory

ROOT = Path(__file__).resolve().parent.parent

# Each execution needs 64 MiB intermediates (16,384 pages): more than glibc's mmap threshold.
CHILD = r"""
import json, resource, sys
sys.path.insert(0, {root!r})
from iln_jax import host_memory
reused = host_memory.configure({policy!r})
import jax, jax.numpy as jnp
def program(x, w):  # a 128 MiB intermediate from little arithmetic
    y = jnp.tanh(x @ w)
    return jnp.sum((y @ w.T) * x)
x, w = jnp.ones((8192, 128)) / 128, jnp.ones((128, 4096)) / 128
f = jax.jit(program).lower(x, w).compile()
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(dict(reused=reused, faults=faults)))
"""
PAGES = 64 * 2**20 // 4096


def _faults(policy: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(Path.home())}
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), policy=policy)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_scratch_buffer_is_reused_between_executions():
    system, reuse = _faults("system"), _faults("reuse")
    assert not system["reused"] and reuse["reused"]
    # The system allocator maps XLA's scratch memory anew at every execution and faults every page in again.
    assert min(system["faults"][1:]) > PAGES, system
    # Kept in the heap, it is mapped once: later executions find it there (a second copy may be
    # mapped once when small allocations split the freed block, never again after that).
    assert sum(reuse["faults"][2:]) < PAGES // 16, reuse


def test_policies(monkeypatch):
    monkeypatch.setattr(host_memory, "reuse_freed_memory", lambda: True)
    assert host_memory.configure("system") is False
    monkeypatch.setenv(host_memory.ENV, "system")
    assert host_memory.configure() is False
    monkeypatch.setenv(host_memory.ENV, "reuse")
    assert host_memory.configure() is True
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert host_memory.configure("auto") is False  # an accelerator: XLA:CPU runs nothing large
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.configure("auto") is True
    with pytest.raises(ValueError, match="ILN_JAX_HOST_MALLOC='fast': expected one of auto, reuse, system"):
        host_memory.configure("fast")


def test_accelerator_plugin_means_not_cpu(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delenv("JAX_PLATFORM_NAME", raising=False)
    monkeypatch.setattr(host_memory, "_module_installed", lambda name: name == "jax_cuda12_plugin")
    assert not host_memory.runs_on_cpu()
    monkeypatch.setattr(host_memory, "_module_installed", lambda name: False)
    assert host_memory.runs_on_cpu()

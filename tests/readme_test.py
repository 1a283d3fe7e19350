"""The README runs as printed: every Python block and every shell command either runs here or is
marked, in the README's source, with what a fresh offline machine lacks.

A block is marked by the line before it: ``<!-- needs: network -->`` (downloads, an official
checkout), ``data`` (benchmark folders), ``cluster`` (pods, SLURM), ``accelerator`` (a GPU or TPU
VM) or ``time`` (hours of training, full-size benchmarks; the marker gives the reason and the
CPU-sized way). Unmarked Python blocks run in a directory
outside the repository, as a user's script would, importing the installed ``iln_jax`` (``pip
install -e .``, which ``.ci/run`` does as the README says; without it the checkout is put on
PYTHONPATH, which is what the editable install amounts to). A block whose first line is ``#
name.py`` is that file, written next to the commands. Shell commands run from a directory laid
out like the checkout (its scripts and configs linked, so nothing is written into the
repository), as printed or, for training, at tiny size (``COMMANDS``). A network-marked Python block
whose only download is a file this test can stand in for (``STAND_INS``) runs on the stand-in.

The blocks run in three groups (each in README order, in its own directory) so that pytest-xdist
spreads them: the main job and what reads its work directory, the user norm, the other snippets.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import xla_flags

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NEEDS = ("network", "data", "cluster", "accelerator", "time")
_MARKER = re.compile(r"<!-- needs: (?P<needs>[a-z, ]+?)(?:: (?P<why>.+?))? -->")
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\w*)\s*$")
# Linked into the directory the shell commands run in (what a checkout has at its root; not the package).
CHECKOUT_ENTRIES = ("train.py", "eval.py", "configs", "scripts", "bench")

# README command -> what this test runs: the same (None) or its tiny-size equivalent.
MAIN_JOB_TINY = "python3 train.py --config configs/default.py:tiny=1 --workdir runs/default"
COMMANDS = {
    "python3 train.py": MAIN_JOB_TINY,
    "python3 train.py --config configs/swinir.py:tiny=1 --config.model.norm=my_norms:MyNorm": None,
    "python3 -m iln_jax.pretrained list": None,
    "python3 -m iln_jax.pretrained show swinir-classical-x2": None,
    "python3 -m iln_jax.export --workdir runs/default --dtype float16 --out mine_fp16.npz": None,
    "python3 eval.py --workdir runs/default --out results/": None,
    "python3 -m iln_jax.analysis --workdir runs/default --out analysis/": None,
}
# Files that README blocks read after reading them by hand from the network, and what each test
# writes in their place: (arch, official constructor arguments) of a same-layout state_dict.
STAND_INS = {
    "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth": ("swinir", dict(
        upscale=2, img_size=64, window_size=8, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, mlp_ratio=2,
        upsampler="pixelshuffle", resi_connection="1conv")),
}


@dataclasses.dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int                   # of the opening fence, 1-based
    needs: frozenset[str]
    why: str | None

    @property
    def file_name(self) -> str | None:
        """``name.py`` when the block is a file to save (its first line is ``# name.py``)."""
        first = self.text.splitlines()[0].strip() if self.text.strip() else ""
        m = re.fullmatch(r"#\s*([\w.-]+\.py)", first)
        return m.group(1) if m else None

    def commands(self) -> list[str]:
        """The shell commands, continuation lines joined, comments dropped, as ``shlex`` reads them."""
        out, pending = [], ""
        for raw in self.text.splitlines():
            pending += raw.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            words = shlex.split(pending, comments=True)
            if words:
                out.append(" ".join(words))
            pending = ""
        return out

    def where(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(text: str | None = None) -> list[Block]:
    lines = (README.read_text() if text is None else text).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent, body, j = fence.group("indent"), [], i + 1
        while lines[j].strip() != "```":
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = _MARKER.fullmatch(lines[k].strip()) if k >= 0 else None
        needs = frozenset(n.strip() for n in marker.group("needs").split(",")) if marker else frozenset()
        blocks.append(Block(fence.group("lang"), "\n".join(body) + "\n", i + 1, needs,
                            marker.group("why") if marker else None))
        i = j + 1
    return blocks


def _group(block: Block) -> str:
    if "my_norms" in block.text:
        return "user_norm"
    if "runs/default" in block.text or "mine_fp16" in block.text or block.commands() == ["python3 train.py"]:
        return "main_job"
    return "snippets"


def _stand_ins_for(block: Block) -> list[str] | None:
    """The stand-in files a network-marked Python block needs, or None when it needs more than those."""
    if block.lang != "python" or block.needs != {"network"}:
        return None
    names = re.findall(r"[\"']([\w.-]+\.(?:pth|npz))[\"']", block.text)
    read = [n for n in names if n in STAND_INS]
    return read if read and "load_pretrained" not in block.text else None


def _runnable(block: Block) -> bool:
    return block.lang in ("python", "bash") and (not block.needs or _stand_ins_for(block) is not None)


# ------------------------------------------------------------------------------------------------
# The README's structure: nothing unrun and unmarked, markers well formed, CI as the README says.

def test_every_block_runs_here_or_is_marked():
    blocks = readme_blocks()
    assert sum(b.lang == "python" for b in blocks) >= 6 and sum(b.lang == "bash" for b in blocks) >= 10
    problems = []
    for b in blocks:
        unknown = b.needs - set(NEEDS)
        if unknown:
            problems.append(f"{b.where()}: unknown needs {sorted(unknown)} (known: {', '.join(NEEDS)})")
        if "time" in b.needs and not b.why:
            problems.append(f"{b.where()}: a 'time' marker says why and what runs at CPU size (needs: time: ...)")
        if b.lang == "bash" and not b.needs:
            problems += [f"{b.where()}: {c!r} is neither run by tests/readme_test.py (COMMANDS) nor marked"
                         for c in b.commands() if c not in COMMANDS]
    assert not problems, "\n".join(problems)
    # every command this test knows is still in the README (a renamed one would go untested)
    printed = {c for b in blocks if b.lang == "bash" and not b.needs for c in b.commands()}
    assert printed == set(COMMANDS)


def test_marker_and_command_parsing():
    text = ("x\n<!-- needs: data, time: hours -->\n```bash\npython3 a.py \\\n  --k '{\"a\": 1}'  # note\n# c\n```\n"
            "  <!-- needs: cluster -->\n  ```bash\n  srun b\n  ```\n```python\n# f.py\nimport os\n```\n")
    a, b, c = readme_blocks(text)
    assert (a.needs, a.why, a.commands(), a.line) == ({"data", "time"}, "hours", ['python3 a.py --k {"a": 1}'], 3)
    assert (b.needs, b.commands()) == ({"cluster"}, ["srun b"])
    assert (c.needs, c.file_name, c.lang) == (frozenset(), "f.py", "python")


def test_install_and_ci_follow_the_readme():
    install = next(b for b in readme_blocks() if b.lang == "bash" and "pip install" in b.text)
    commands = install.commands()
    assert install.needs == {"network"}
    assert "pip install -r requirements.txt && pip install -e ." in commands
    test_command = commands[-1].split(" && ")[-1]
    assert test_command == "python3 -m pytest -n 2"
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == test_command  # CI runs the README's test command ...
    installs = [line for line in ci if "pip install" in line]
    assert installs[0].endswith("-r requirements-dev.txt") and installs[1].endswith("-e .")  # ... after its install
    project = (ROOT / "pyproject.toml").read_text()
    assert 'name = "iln_jax"' in project and 'include = ["iln_jax*"]' in project
    assert any(line.startswith("python3 -m ruff check .") for line in ci) and "[tool.ruff.lint]" in project


# ------------------------------------------------------------------------------------------------
# Running the blocks.

def _python_env(cwd: Path) -> dict:
    """The environment of a user's process: the installed iln_jax, or the checkout on PYTHONPATH when
    it is not installed here (what ``pip install -e .`` amounts to). XLA's optimisation passes are
    off, as in the rest of the suite (they triple compile time and change nothing tested here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "PYTHONPATH"))}
    env.update(xla_flags.process_env(1), ILN_JAX_CACHE=str(cwd / "cache"), MPLBACKEND="Agg")
    found = subprocess.run([sys.executable, "-c", "import iln_jax; print(iln_jax.__file__)"], cwd=cwd, env=env,
                           capture_output=True, text=True)
    if found.returncode != 0 or Path(found.stdout.strip()).resolve().parent.parent != ROOT:
        env["PYTHONPATH"] = str(ROOT)
    return env


def _checkout_view(cwd: Path) -> None:
    for name in CHECKOUT_ENTRIES:
        (cwd / name).symlink_to(ROOT / name)


def _run(argv: list[str], cwd: Path, env: dict, what: str) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _write_stand_in(name: str, cwd: Path) -> None:
    import jax
    import numpy as np
    import torch

    from iln_jax import convert
    arch, kwargs = STAND_INS[name]
    module = convert.build(arch, **kwargs)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 16, 16, 3), np.float32))
    variables = jax.tree.map(lambda s: np.full(s.shape, 0.01, s.dtype), shapes)
    state_dict = convert.to_torch(arch, variables, **kwargs)
    torch.save({"params": {k: torch.from_numpy(v) for k, v in state_dict.items()}}, cwd / name)


def _run_block(block: Block, cwd: Path, env: dict) -> None:
    if block.lang == "python":
        if block.file_name:  # a file next to the commands: it must at least import
            (cwd / block.file_name).write_text(block.text)
            _run([sys.executable, "-c", f"import {block.file_name[:-3]}"], cwd, env, block.where())
            return
        for name in _stand_ins_for(block) or ():
            _write_stand_in(name, cwd)
        script = cwd / f"readme_block_{block.line}.py"
        script.write_text(block.text)
        _run([sys.executable, script.name], cwd, env, block.where())
        return
    for command in block.commands():
        argv = shlex.split(COMMANDS[command] or command)
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        _run(argv, cwd, env, f"{block.where()}: {command}")


def _run_group(group: str, tmp_path: Path) -> Path:
    blocks = [b for b in readme_blocks() if _runnable(b) and _group(b) == group]
    assert blocks, group
    _checkout_view(tmp_path)
    env = _python_env(tmp_path)
    for block in blocks:
        _run_block(block, tmp_path, env)
    return tmp_path


def test_readme_main_job_and_its_work_directory(tmp_path):
    cwd = _run_group("main_job", tmp_path)
    for made in ("runs/default/checkpoints", "mine_fp16.npz", "results/summary.md", "analysis/analysis.json"):
        assert (cwd / made).exists(), made
    assert not list(ROOT.glob("runs/default*"))  # nothing went into the checkout


def test_readme_user_norm(tmp_path):
    import json
    cwd = _run_group("user_norm", tmp_path)
    config = json.loads((cwd / "runs/swinir_srx2_my_norms_MyNorm_tiny/config.json").read_text())
    assert config["model"]["norm"] == "my_norms:MyNorm" and config["model"]["kwargs"]["stdnorm"] is False


def test_readme_snippets(tmp_path):
    torch = pytest.importorskip("torch")
    cwd = _run_group("snippets", tmp_path)
    converted = torch.load(cwd / "converted_x2.pth", weights_only=True)["params"]
    original = torch.load(cwd / "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth", weights_only=True)["params"]
    assert converted.keys() == original.keys()
    assert all(isinstance(v, torch.Tensor) and torch.equal(v, original[k]) for k, v in converted.items())

"""The package's import graph: no cycles, and every import points down the layer order.

Every ``import`` statement of ``iln_jax`` counts, function-local ones included (a cycle hidden in a
function is still a cycle). The graph is read from the source with ``ast``; nothing is imported.

The layers, lowest first (a module may import its own package and anything in a lower layer;
packages that share a layer do not import each other):

0. ``errors``: the error classes every layer raises.
1. ``dependencies``: importing the optional packages (messages from ``errors``).
2. ``paths``, ``metrics``, ``xla_options``, ``host_memory``: single-module foundations.
3. ``data`` (data sets, degradations) and ``layers`` (norms, attention, convs): independent.
4. ``models``: the backbones, built from layers.
5. ``convert`` (PyTorch <-> Flax weights), ``inference`` (``Restorer``) and ``diagnostics`` (the
   paper's per-block statistics; training logs them): over models.
6. ``analysis`` (the paper's analyses and plots) and ``export`` (StableHLO files).
7. ``train``: the step, the loop and the run layout (checkpoints) it writes.
8. ``evaluation`` (benchmarks, conventions and loading finished runs, ``train``'s checkpoints) and
   ``parity`` (the golden checks, run through ``train``'s step; full precision for comparisons).
9. ``pretrained``: official checkpoints converted once and kept as runs (loaded via ``evaluation``).
10. ``cli`` (the model-source flags of the programs), ``compare``, ``experiments``: over everything.

A package's ``__main__`` is a program, not a library: it stands above every layer, and nothing
imports it.
"""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "iln_jax"

LAYERS = (
    {"errors"},
    {"dependencies"},
    {"paths", "metrics", "xla_options", "host_memory"},
    {"data", "layers"},
    {"models"},
    {"convert", "inference", "diagnostics"},
    {"analysis", "export"},
    {"train"},
    {"evaluation", "parity"},
    {"pretrained"},
    {"cli", "compare", "experiments"},
)
PROGRAMS = len(LAYERS)  # the layer of every __main__


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _targets(name: str, node) -> list[str]:
    """The package modules an import statement of module ``name`` loads (its own, by name)."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's package, ``level - 1`` packages up
            package = name if _is_package(name) else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    out = []
    for target in candidates:
        while target and target not in MODULES:  # ``import iln_jax.a.b`` names module iln_jax.a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            out.append(target)
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                       for t in _targets(name, node)}
    return graph


GRAPH = _graph()


def _component(name: str) -> str:
    return name.split(".")[1] if "." in name else name


def _layer(name: str) -> int:
    if name.endswith(".__main__"):
        return PROGRAMS
    component = _component(name)
    for i, members in enumerate(LAYERS):
        if component in members:
            return i
    if name == "iln_jax":  # the root package (empty): as low as it gets
        return 0
    raise AssertionError(f"{name}: iln_jax.{component} has no layer; add it to LAYERS (and the docstring)")


def _cycle(graph: dict[str, set[str]]):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_local_and_relative_imports():
    """The checks below mean something only if the graph holds what the source imports."""
    assert "iln_jax.layers.norm_registry" in GRAPH["iln_jax.models.checks"]
    assert "iln_jax.models.sr_shell" in GRAPH["iln_jax.models.scan_layout"]
    assert "iln_jax.data.tfds_builders" in GRAPH["iln_jax.data.pipeline"]  # a function-local import
    assert "iln_jax.convert" in GRAPH["iln_jax.compare.pair"]               # ``from iln_jax import convert``
    tree = ast.parse("from . import stacking\nfrom .sr_shell import SRTransformer\n")
    assert [t for node in tree.body for t in _targets("iln_jax.models.swinir", node)] == \
        ["iln_jax.models.stacking", "iln_jax.models.sr_shell"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_point_down_the_layers():
    upward = []
    for name, targets in sorted(GRAPH.items()):
        for target in sorted(targets):
            if target.endswith(".__main__"):
                upward.append(f"{name} imports the program {target}")
            elif _component(target) != _component(name) and _layer(target) >= _layer(name):
                upward.append(f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})")
    assert not upward, "imports that do not point down the layers:\n  " + "\n  ".join(upward)


def test_every_package_has_a_layer():
    for name in MODULES:
        _layer(name)

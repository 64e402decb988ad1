"""One-way layers (issue 24): every import in src/etgnn points down the layer order or stays in its
layer, and no set of modules imports itself round in a circle.

The walk reads every ``import`` statement of every module with ``ast``, module level and inside
functions alike (an import moved into a function to dodge a circle is still an edge), resolves
relative imports, and maps ``from package import name`` to the submodule when ``name`` is one.

:data:`LAYERS` is the one table of layers; ``docs/model.md`` ("How the code is organised") draws
the same table, and :func:`test_the_docs_draw_the_same_layers` keeps the two equal.  A new module
goes into the layer of its package (by prefix); a new top-level module must be added here.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOCS = ROOT / "docs" / "model.md"

#: The layers, lowest first: (name, module prefixes).  A module may import from its own layer and
#: from the layers below it, never from a layer above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("etgnn._version", "etgnn.errors", "etgnn._warnings", "etgnn._paths", "etgnn.tensors")),
    ("config", ("etgnn.config", "etgnn.config_reference", "etgnn.pretrained")),
    ("data", ("etgnn.data",)),
    ("nn", ("etgnn.nn",)),
    ("targets", ("etgnn.targets",)),
    ("model", ("etgnn.model", "etgnn.predict", "etgnn.uncertainty")),
    ("evaluate", ("etgnn.evaluate", "etgnn.calculator", "etgnn.export", "etgnn.symmetry", "etgnn.testing")),
    ("train", ("etgnn.train",)),
    ("observables, tune", ("etgnn.observables", "etgnn.tune", "etgnn.qm")),
    ("cli", ("etgnn", "etgnn.cli")),
]


def _modules() -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package __init__)}`` of every module under src/etgnn."""
    out = {}
    for path in sorted((SRC / "etgnn").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _resolve(name: str, modules) -> str | None:
    """The longest prefix of ``name`` that is a module of etgnn (``None``: not etgnn's)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges() -> dict[str, list[tuple[str, int]]]:
    """``{module: [(imported etgnn module, line)]}`` over every import statement, wherever it is."""
    modules = _modules()
    edges: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for mod, (path, is_pkg) in modules.items():
        package = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                names = [f"{origin}.{a.name}" for a in node.names]  # a submodule, or a name in origin
            else:
                continue
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != mod and (target, node.lineno) not in edges[mod]:
                    edges[mod].append((target, node.lineno))
    return edges


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of the longest prefix naming ``module`` (``None``: in no layer).

    The root package ``etgnn`` names itself only (its ``__init__``, the public API), not every module.
    """
    best, index = "", None
    for k, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or (p != "etgnn" and module.startswith(p + "."))) and len(p) > len(best):
                best, index = p, k
    return index


def _where(module: str) -> str:
    path, _ = _modules()[module]
    return str(path.relative_to(ROOT))


def test_every_module_has_a_layer():
    missing = [m for m in _modules() if layer_of(m) is None]
    assert not missing, f"modules in no layer of tests/test_layers.py LAYERS (add them, and to docs/model.md): {missing}"


def test_no_import_points_up_a_layer():
    bad = []
    for mod, targets in sorted(import_edges().items()):
        here = layer_of(mod)
        for target, line in targets:
            there = layer_of(target)
            if here is not None and there is not None and there > here:
                bad.append(f"{_where(mod)}:{line}: {mod} (layer {LAYERS[here][0]!r}) imports {target} "
                           f"(layer {LAYERS[there][0]!r}, above it)")
    assert not bad, "imports pointing up the layer order:\n" + "\n".join(bad)


def _cycles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {m: sorted({t for t, _ in ts}) for m, ts in edges.items()}
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    edges = import_edges()
    cycles = _cycles(edges)
    lines = []
    for component in cycles:
        inside = set(component)
        lines.append("circle: " + ", ".join(component))
        lines += [f"  {_where(m)}:{line}: {m} -> {t}" for m in component for t, line in edges[m] if t in inside]
    assert not cycles, "\n".join(lines)


def test_the_walk_sees_imports_inside_functions_and_relative_imports():
    """The walk itself: ``from ..data import keys`` names the module keys, an import inside a
    method is an edge, and a circle is found."""
    edges = {m: {t for t, _ in ts} for m, ts in import_edges().items()}
    assert "etgnn.data.keys" in edges["etgnn.targets.losses"]
    assert "etgnn.data.readers" in edges["etgnn.predict"]  # inside Predictor.predict_file
    assert _cycles({"a": [("b", 1)], "b": [("c", 2)], "c": [("a", 3)], "d": [("a", 4)]}) == [["a", "b", "c"]]
    assert _cycles({"a": [("b", 1)], "b": []}) == []


def _docs_layers() -> list[tuple[str, tuple[str, ...]]]:
    """The layer table drawn in docs/model.md: the ``text`` block after "How the code is organised"
    whose lines read ``<layer>   <module>, <module>, ... (comment)``, highest layer first."""
    text = DOCS.read_text()
    section = text[text.index("## How the code is organised"):]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block, "docs/model.md: no ```text block with the layers in 'How the code is organised'"
    rows = []
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith(("|", "^", "v", "layer")):
            continue
        name, _, rest = re.split(r"(\s{2,})", line.strip(), maxsplit=1)
        rest = re.sub(r"\([^)]*\)", "", rest)  # comments in parentheses
        rows.append((name, tuple(m.strip() for m in rest.split(",") if m.strip())))
    return rows[::-1]


def test_the_docs_draw_the_same_layers():
    assert _docs_layers() == LAYERS, "docs/model.md's layer table differs from tests/test_layers.py LAYERS"


@pytest.mark.parametrize("module, layer", [("etgnn.targets.losses", "targets"), ("etgnn.train.ddp", "train"),
                                           ("etgnn.data.statistics", "data"), ("etgnn", "cli"),
                                           ("etgnn.evaluate", "evaluate")])
def test_layer_of(module, layer):
    assert LAYERS[layer_of(module)][0] == layer
    assert layer_of("etgnn.no_such_module") is None  # not in the root package's layer

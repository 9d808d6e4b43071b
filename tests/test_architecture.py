"""The package's import graph: no cycles, no private names imported across modules, no module over 450
lines, dagster imported only by the Dagster layer, and layers that point down only."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "imaging_pipelines"
MAX_LINES = 450
DAGSTER_LAYER = ("imaging_pipelines.dagster_layer", "imaging_pipelines.definitions")
# layer -> packages it may import (besides itself); anything not listed may not be imported
LAYERS = {
    "imaging_pipelines.config.paths": set(),
    "imaging_pipelines.core": {"imaging_pipelines.core", "imaging_pipelines.config.paths"},
    "imaging_pipelines.config": {"imaging_pipelines.core", "imaging_pipelines.config"},
    "imaging_pipelines.models": {"imaging_pipelines.core", "imaging_pipelines.config", "imaging_pipelines.models"},
    "imaging_pipelines.classify": {"imaging_pipelines.core", "imaging_pipelines.config", "imaging_pipelines.models",
                                   "imaging_pipelines.classify", "imaging_pipelines.report"},
}
RUNTIME_NOT_TOOLS = ("imaging_pipelines.core", "imaging_pipelines.config", "imaging_pipelines.medical", "imaging_pipelines.classify",
                     "imaging_pipelines.remote_sensing", "imaging_pipelines.models", "imaging_pipelines.report")


def modules() -> dict[str, Path]:
    found = {}
    for f in PKG.rglob("*.py"):
        name = ".".join(f.relative_to(PKG.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = f
    return found


def imports(mods: dict[str, Path]):
    """(module, imported module or None, imported name, line) for every import of the package."""
    for name, f in mods.items():
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield name, a.name, None, node.lineno
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    yield name, base, a.name, node.lineno


def edges(mods):
    graph = collections.defaultdict(set)
    for src, base, name, _ in imports(mods):
        for target in (f"{base}.{name}" if name else None, base):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != src and target.startswith("imaging_pipelines"):
                graph[src].add(target)
                break
    return graph


def cycles(graph, nodes) -> list[list[str]]:
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    mods = modules()
    assert cycles(edges(mods), mods) == []


def test_no_private_names_imported_across_modules():
    mods = modules()
    private = [f"{src}: {name} from {base}" for src, base, name, _ in imports(mods)
               if name and base in mods and base != src and name.startswith("_") and not name.startswith("__")]
    assert private == []


def test_no_long_modules():
    long = {n: len(f.read_text().splitlines()) for n, f in modules().items()}
    assert {n: c for n, c in long.items() if c > MAX_LINES} == {}


def test_dagster_only_in_the_dagster_layer():
    outside = sorted({src for src, base, _, _ in imports(modules())
                      if base.split(".")[0] in ("dagster", "dagster_graphql") or base.startswith("dagster_")
                      if not src.startswith(DAGSTER_LAYER) and src != "imaging_pipelines.cli"})
    assert outside == []


def test_layers_point_down():
    mods = modules()
    graph = edges(mods)
    upward = []
    for src, targets in graph.items():
        for layer, allowed in LAYERS.items():
            if src == layer or src.startswith(layer + "."):
                upward += [f"{src} -> {t}" for t in targets if not any(t == a or t.startswith(a + ".") for a in allowed)]
        if src.startswith(RUNTIME_NOT_TOOLS):
            upward += [f"{src} -> {t}" for t in targets if t.startswith("imaging_pipelines.tools")]
    assert upward == []


def test_the_checker_finds_what_it_looks_for(tmp_path):
    """The graph code on a tiny package with a cycle: it must report it (a check that passes on garbage
    is no check)."""
    graph = {"p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": {"p.a"}}
    assert cycles(graph, ["p.a", "p.b", "p.c"]) == [["p.a", "p.b"]]

"""The layers are what the folders say (DESIGN.md, "Layout"), read off the source's imports.

    tapeir/ (face) ──► frontend/ ──► ir/
                  ──► passes/   ──► ir/   (VJP rules may use frontend's tensor vocabulary)
                  ──► backends/ ──► ir/

Every import statement counts, at module level or inside a function. A module's layer is
its top-level folder; the face is tapeir/.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("ir", "frontend", "passes", "backends")
FORBIDDEN = {  # layer -> layers it may not import
    "ir": {"frontend", "passes", "backends", "face"},
    "frontend": {"backends", "passes", "face"},
    "passes": {"backends", "face"},
    "backends": {"frontend", "passes", "face"},
}


def _modules() -> dict[str, str]:
    """Dotted module name (tapeir.ir.graph) -> file path, for every module of the package."""
    found = {}
    for folder, prefix in [(d, f"tapeir.{d}") for d in LAYERS] + [("tapeir", "tapeir")]:
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
            rel = os.path.relpath(dirpath, base)
            pkg = prefix if rel == "." else prefix + "." + rel.replace(os.sep, ".")
            for f in sorted(filenames):
                if f.endswith(".py"):
                    found[pkg if f == "__init__.py" else f"{pkg}.{f[:-3]}"] = os.path.join(dirpath, f)
    return found


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "face"


def _imports(module: str, path: str) -> set[str]:
    """The tapeir modules `module` imports (a name imported from a package counts as the
    submodule of that name when there is one, else as the package)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "tapeir")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tapeir":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            out.update(subs)
            if len(subs) < len(node.names):
                out.add(target)
    unknown = sorted(m for m in out if m not in MODULES)
    assert not unknown, f"{module} imports {unknown}, which are not modules of tapeir"
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_the_walk_sees_the_package():
    # not vacuous: every layer and the face have modules, and imports were read
    assert {_layer(m) for m in MODULES} == set(LAYERS) | {"face"}
    assert {"tapeir.ir.builder", "tapeir.frontend.tracer", "tapeir.passes.manager"} <= set(MODULES)
    assert "tapeir.ir.builder" in GRAPH["tapeir.frontend.tracer"]
    assert sum(map(len, GRAPH.values())) > 50


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer):
    bad = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if _layer(m) == layer
                 for t in targets if _layer(t) in FORBIDDEN[layer])
    assert not bad, f"{layer}/ may not import {sorted(FORBIDDEN[layer])}:\n  " + "\n  ".join(bad)


def test_no_import_cycles():
    # Tarjan's strongly connected components: any component of two or more modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in GRAPH[v]:
                cycles.append(sorted(comp))

    for m in sorted(GRAPH):
        if m not in index:
            visit(m)
    assert not cycles, "import cycles between modules:\n  " + "\n  ".join(" <-> ".join(c) for c in cycles)

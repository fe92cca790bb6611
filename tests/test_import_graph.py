"""The package's import graph, read with `ast` (nothing imported): no cycles, layers kept apart.

Every import counts, function-level (lazy) ones too: a lazy import hides a cycle from the
interpreter, not from a reader. Only `if TYPE_CHECKING:` blocks are left out (never run).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG_DIR = Path(__file__).resolve().parents[1] / "pytest_kvfabric"
PKG = PKG_DIR.name


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PKG_DIR.rglob("*.py"):
        parts = list(path.relative_to(PKG_DIR.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                    (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                skip.update(id(n) for n in ast.walk(node))
    return skip


def _imports(name: str, path: Path, is_pkg: bool, mods: dict) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) of every import of this package in a module."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == PKG]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PKG:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, "", node.lineno) if sub in mods else (base, a.name, node.lineno))
    return out


MODS = _modules()
GRAPH = {name: _imports(name, path, is_pkg, MODS) for name, (path, is_pkg) in MODS.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_the_package():
    assert f"{PKG}.emulator.plan" in GRAPH
    assert any(mod == f"{PKG}.emulator.plantypes" for mod, _, _ in GRAPH[f"{PKG}.emulator.plan"])


def test_no_import_cycles():
    edges = {name: {mod for mod, _, _ in imps if mod in MODS and mod != name} for name, imps in GRAPH.items()}
    assert _cycles(edges) == []


@pytest.mark.parametrize("lower, upper", [("endpoint", "fabric"), ("emulator", "endpoint"),
                                          ("emulator", "fabric"), ("transports", "fabric")])
def test_layers(lower, upper):
    """A lower layer never imports an upper one (the agents do not know where they run)."""
    bad = [f"{name}:{line} imports {mod}" for name, imps in GRAPH.items() if name.startswith(f"{PKG}.{lower}.")
           for mod, _, line in imps if mod == f"{PKG}.{upper}" or mod.startswith(f"{PKG}.{upper}.")]
    assert bad == []


def test_no_private_names_imported_across_modules():
    """`from m import _x` reaches into another module's internals (a private submodule, such as
    a C extension or `_stream`, is the package's own business and is allowed)."""
    bad = [f"{name}:{line} imports {mod}.{attr}" for name, imps in GRAPH.items()
           for mod, attr, line in imps if attr.startswith("_") and not attr.startswith("__")]
    assert bad == []

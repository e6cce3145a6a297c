"""Imports point one way: no import cycle among kms_cli's modules.

The graph is read with `ast` from every module of the package, counting every `import` and
`from ... import` statement wherever it is (module level, or inside a function, where the
deferred imports of the hot path live), relative imports included; imports under
`if TYPE_CHECKING:` do not run and are not counted, and neither are imports by name through
`importlib` (the provider and handler tables). An edge goes to the module named, or to the
package whose `__init__` is named (`from kms_cli.store import Store`); a submodule import
does not count as an import of its parent packages.
"""

from __future__ import annotations

import ast
import os

import kms_cli

PACKAGE_DIR = os.path.dirname(kms_cli.__file__)

# Cycles not broken yet, each the set of modules of one strongly connected component (or a
# superset of it, while it is being broken). Empty: every cycle is broken; keep it so.
KNOWN_CYCLES: list[frozenset[str]] = []


def _modules() -> dict[str, str]:
    """Module name -> path, for every module of the package (a package is its __init__)."""
    root = os.path.dirname(PACKAGE_DIR)
    mods = {}
    for d, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                mods[name.removesuffix(".__init__")] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST, module: str, is_package: bool):
    """Absolute names of what `tree` imports: "a.b" for `import a.b`, "a.b" and "a.b.c" for
    `from a.b import c` (c may be a module or a name defined in a.b)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                yield base, alias.name
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    mods = _modules()

    def target(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for base, name in _imported_names(tree, module, path.endswith("__init__.py")):
            full = f"{base}.{name}" if name and name != "*" else base
            t = full if full in mods else target(base)
            if t is not None and t != module:
                graph[module].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.add(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "kms_cli.crypto.streaming" in graph["kms_cli.crypto.chunked"]  # inside a function
    assert "kms_cli.crypto.blocks" in graph["kms_cli.crypto.streaming"]  # module level
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    tree = ast.parse("from . import x\nfrom ..y import z\nif TYPE_CHECKING:\n    import q\n")
    assert sorted(_imported_names(tree, "p.s.m", False)) == [("p.s", "x"), ("p.y", "z")]


def test_no_import_cycles():
    """Imports point one way; a cycle not listed in KNOWN_CYCLES fails."""
    new = [sorted(c) for c in cycles(import_graph()) if not any(c <= known for known in KNOWN_CYCLES)]
    assert new == [], f"import cycles: {new}"


def test_crypto_has_no_import_cycles():
    """The crypto layer in particular (asym <-> kem/sign and chunked <-> streaming were broken)."""
    graph = {m: {t for t in ts if t.startswith("kms_cli.crypto")}
             for m, ts in import_graph().items() if m.startswith("kms_cli.crypto")}
    assert cycles(graph) == []


def test_known_cycles_are_still_cycles():
    """A cycle broken since must leave KNOWN_CYCLES, so that it cannot come back unnoticed."""
    found = cycles(import_graph())
    stale = [sorted(known) for known in KNOWN_CYCLES if not any(c <= known for c in found)]
    assert stale == [], f"no longer cycles, remove from KNOWN_CYCLES: {stale}"

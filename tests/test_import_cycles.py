"""No import loop anywhere in the package: a static walk of every module's imports (from the
AST, imports inside functions included; ``if TYPE_CHECKING:`` blocks are not imports)."""

from __future__ import annotations

import ast
import os

import fastload

PKG_DIR = os.path.dirname(os.path.abspath(fastload.__file__))
# Lower layers never import higher ones (the loop never imports the adapters).
LAYERS = [
    "_native",
    "checks",
    "errors",
    "storage",
    "batch",
    "plan",
    "loop",
    "adapters",
    "compat",
    "app",
]


def _modules() -> dict[str, str]:
    mods = {}
    for d, _, files in os.walk(PKG_DIR):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), os.path.dirname(PKG_DIR))[:-3]
                mods[rel.replace(os.sep, ".").removesuffix(".__init__")] = os.path.join(d, f)
    return mods


def _imports(name: str, path: str, mods: dict[str, str]) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
            ]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_lower_layers_never_import_higher_ones():
    bad = []
    for mod, targets in _graph().items():
        here = _layer(mod)
        for t in targets:
            there = _layer(t)
            if here and there and LAYERS.index(there) > LAYERS.index(here):
                bad.append(f"{mod} -> {t}")
    assert not bad, "a lower layer imports a higher one: " + ", ".join(sorted(bad))


def test_the_walk_sees_lazy_imports(tmp_path):
    """The check must not pass by missing imports inside functions."""
    graph = _graph()
    assert (
        "fastload.batch.torch_output" in graph["fastload.loop.output"]
    )  # imported inside make_output

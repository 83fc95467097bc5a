"""The layout rules of docs/architecture.md, checked on the source: no module above 500 lines, no
private name imported across modules, no import cycle among module-level imports, and the CLI
leaves import only the library (tests/test_cli.py checks the last in detail)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "python" / "fcmlc"
MAX_LINES = 500


def _modules() -> dict:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _imports(name: str, f: Path):
    """(target module, imported name, at module level) for every `from fcmlc... import` in f."""
    tree = ast.parse(f.read_text(encoding="utf-8"))
    pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "fcmlc":
                for a in node.names:
                    yield target, a.name, id(node) in top


def test_no_module_is_above_the_size_limit():
    big = {n: len(f.read_text().splitlines()) for n, f in _modules().items()}
    assert {n: v for n, v in big.items() if v > MAX_LINES} == {}


def test_no_private_name_crosses_a_module_boundary():
    mods = _modules()
    bad = [(n, t, a) for n, f in mods.items() for t, a, _ in _imports(n, f)
           if a.startswith("_") and not a.startswith("__") and f"{t}.{a}" not in mods and a != "_core"]
    assert bad == []


def test_no_import_cycle_among_module_level_imports():
    mods = _modules()
    edges = {n: set() for n in mods}
    for n, f in mods.items():
        for t, a, top in _imports(n, f):
            dst = f"{t}.{a}" if f"{t}.{a}" in mods else t
            # importing the package fcmlc itself (for __version__) runs before any submodule
            if top and dst in mods and dst != "fcmlc" and dst != n:
                edges[n].add(dst)
    state, cycles = {}, []

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                # a package importing its own submodules (re-exports) is not a cycle unless the
                # submodule imports the package back
                cycles.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(mods):
        if not state.get(m):
            visit(m, [])
    assert cycles == []


"""The layout's rules, checked on the source with ``ast`` (every import, lazy ones included):

* no import cycle between modules of the four packages;
* views and agents never import the orchestrator, nor the store's internals (only its
  public primitives: errors, labels, media, contracts, secrets);
* the store imports no model code (views, agents) and no orchestrator;
* no module is over 400 lines; the store reads no config keys.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).parents[1]
PACKAGES = ("views", "agents", "orchestrator", "store")
STORE_PRIMITIVES = {"store", "store.errors", "store.labels", "store.media", "store.contracts", "store.secrets"}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (REPO / pkg).rglob("*.py"):
            parts = f.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Modules of the project that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.endswith("__init__") or graph.get(nxt) is None:
                continue
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, stack + [nxt]):
                return True
        state[node] = 2
        return False

    for mod in sorted(graph):
        if mod not in PACKAGES and state.get(mod) is None and visit(mod, [mod]):
            break
    assert not cycle, " -> ".join(cycle)


def test_arrows_point_one_way():
    bad = []
    for mod, deps in _graph().items():
        top = mod.split(".")[0]
        for d in deps:
            dtop = d.split(".")[0]
            if top in ("views", "agents") and dtop == "orchestrator":
                bad.append(f"{mod} imports {d}")
            if top in ("views", "agents") and dtop == "store" and d not in STORE_PRIMITIVES:
                bad.append(f"{mod} reaches into the store's internals: {d}")
            if top == "store" and dtop in ("views", "agents", "orchestrator"):
                bad.append(f"{mod} (the store) imports {d}")
    assert not bad, "\n".join(sorted(bad))


def test_no_module_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in _modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_the_store_reads_no_config_keys():
    """What the store needs from a config is a typed runs column (migration 007). Only that
    migration reads old snapshots, once, to fill the columns for runs made before it."""
    key_read = re.compile(r"""config["']?\]?\s*(\[\s*["']|\.get\()""")
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in (REPO / "store").rglob("*.py")
            if p.name != "migrations.py"
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if key_read.search(line) and not line.lstrip().startswith("#")]
    assert not hits, hits

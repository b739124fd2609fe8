"""The store's modules form no import circle: each imports the others at its top, in one direction."""

from __future__ import annotations

import ast
from pathlib import Path

import alignbench.store

STORE = Path(alignbench.store.__file__).parent
PACKAGE = "alignbench.store"


def _module(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The store modules ``path`` imports, anywhere in the file (inside functions too; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found - {_module(path)}


def _graph() -> dict[str, set[str]]:
    paths = sorted(STORE.glob("*.py"))
    modules = {_module(path) for path in paths}
    # the package's __init__ re-exports its modules; a module importing the package means its __init__
    return {_module(path): _imports(path, modules) for path in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read_from_the_files() -> None:
    graph = _graph()
    assert "alignbench.store.urls" in graph["alignbench.store.migrate"]
    assert "alignbench.store.migrate" in graph["alignbench.store._check"]
    assert graph["alignbench.store.urls"] == set()  # a leaf


def test_the_store_modules_form_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_is_found() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_store_modules_import_alignbench_at_the_top() -> None:
    """No store module imports another alignbench module inside a function (what held the circle open)."""
    inside = []
    for path in sorted(STORE.glob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alignbench"):
                    inside.append(f"{path.name}:{node.lineno} {node.module}")
                elif isinstance(node, ast.Import) and any(a.name.startswith("alignbench") for a in node.names):
                    inside.append(f"{path.name}:{node.lineno}")
    assert not inside, inside

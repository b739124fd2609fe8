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
                return path[path.index(nxt) :] + [nxt]
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


def test_the_core_listing_reads_columns_the_tables_define() -> None:
    """alignbench.store.listing names the columns it reads without the ORM; each is a column of
    alignbench.store.tables (the schema's definition) with the same kind of type."""
    from alignbench.store import listing
    from alignbench.store.tables import SQLModel

    for light in (listing.run, listing.model, listing.explainer_setting, listing.dataset, listing.image_score, listing.thumbnail):
        defined = SQLModel.metadata.tables[light.name]
        for column in light.c:
            assert column.name in defined.c, f"{light.name}.{column.name}"
            ours, theirs = column.type, defined.c[column.name].type
            assert ours._type_affinity is theirs._type_affinity, f"{light.name}.{column.name}"
            # times are read aware, in UTC, as SQLModel's UTCDateTime reads them
            assert (type(ours).__name__ == "UTCDateTime") == (type(theirs).__name__ == "UTCDateTime"), f"{light.name}.{column.name}"


def test_listing_runs_never_imports_the_orm(tmp_path) -> None:
    import subprocess
    import sys

    from alignbench.store import open_store

    url = f"sqlite:///{tmp_path / 's.db'}"
    open_store(url).close()
    code = (
        "import sys; from alignbench.store.maintenance import list_stored_runs; "
        f"assert list_stored_runs({url!r}) == []; print(sorted(m for m in ('sqlmodel', 'sqlalchemy.orm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

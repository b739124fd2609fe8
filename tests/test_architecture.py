"""The tree is the architecture: every module imports only from its own layer or the layers above it
(the map in ``alignbench/__init__.py``), at the top of the file or inside a function alike, and no
module imports the test support in ``alignbench.testing``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import alignbench

PACKAGE = Path(alignbench.__file__).resolve().parent

# The layers of alignbench/__init__.py's docstring, top first. A module belongs to the layer of the
# longest prefix that names it.
LAYERS: list[tuple[str, ...]] = [
    ("alignbench.errors", "alignbench._utils"),
    ("alignbench.models.specs", "alignbench.models.preprocessing", "alignbench.models._origins"),
    ("alignbench.models",),
    ("alignbench.explainers",),
    ("alignbench.metrics",),
    ("alignbench.datasets",),
    ("alignbench.store", "alignbench.migrations"),
    ("alignbench.distributed",),
    ("alignbench.scoring", "alignbench.training"),
    ("alignbench.analysis",),
    ("alignbench.html_report",),
    ("alignbench.cli", "alignbench.__main__"),
]


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every alignbench module that ``path`` imports, wherever the import statement sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name.split(".")[0] == "alignbench"]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if module_name(p).split(".")[:2] != ["alignbench", "testing"])


def test_every_module_has_a_layer() -> None:
    lost = [module_name(p) for p in MODULES if module_name(p) != "alignbench" and layer_of(module_name(p)) is None]
    assert not lost, f"modules outside the map in alignbench/__init__.py: {lost}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_flow_downward(path: Path) -> None:
    module = module_name(path)
    if module == "alignbench":  # the public API: lazy attributes naming the modules that define them
        return
    own = layer_of(module)
    upward = [
        f"{name} (line {line})"
        for name, line in imported_modules(path)
        if (theirs := layer_of(name)) is not None and own is not None and theirs > own
    ]
    assert not upward, f"{module} imports against the flow (a later layer): {upward}"
    tests = [f"{name} (line {line})" for name, line in imported_modules(path) if name.startswith("alignbench.testing")]
    assert not tests, f"{module} imports test support: {tests}"

"""What a command imports: `alignbench --help` lists the commands without importing them and renders
typer's help without markdown or tracebacks, and reading the store never pays for torch, SQLModel's
ORM or alembic (the lazy command group of alignbench/cli/app.py, the Core reads of
alignbench/store/listing.py). The figures are issue 21's (benchmarks/cli_latency.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alignbench.cli.app import COMMANDS
from alignbench.store import open_store

DEMO_STORE = Path(__file__).resolve().parents[2] / "alignbench.db.example"
# What reading the store must not import: SQLModel's ORM, the migrations, torch.
NOT_FOR_READING = {"torch", "sqlmodel", "sqlalchemy.orm", "alembic"}
# What no table or terminal plot needs: pandas only for the exports (CSV, JSON, Markdown), matplotlib for PNGs.
NOT_FOR_TABLES = {"pandas", "scipy", "matplotlib"}

# Runs the CLI as `python -m alignbench ARGS` does, then prints the top-level packages it imported.
_PROBE = """
import json, runpy, sys
sys.argv = ["alignbench", *json.loads(sys.argv[1])]
try:
    runpy.run_module("alignbench", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted({name.split(".")[0] for name in sys.modules} | set(sys.modules))}))
"""


def imported(*args: str) -> set[str]:
    """Every module `alignbench ARGS` imports (and the command must succeed)."""
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] in (0, None), done.stderr
    return set(result["modules"])


@pytest.fixture
def demo_store(tmp_path: Path) -> str:
    """A copy of the demo store (what `make example-db` writes): runs to list, compare and report."""
    shutil.copyfile(DEMO_STORE, tmp_path / "demo.db")
    return f"sqlite:///{tmp_path / 'demo.db'}"


def test_help_imports_no_command_nor_torch_numpy_or_sqlalchemy() -> None:
    modules = imported("--help")
    assert not {"torch", "numpy", "sqlalchemy", "sqlmodel"} & modules
    assert not {module for module, _, _ in COMMANDS.values()} & modules
    # typer.rich_utils without what help never uses (alignbench/_utils/deferred.py), nor click itself
    assert "typer.rich_utils" in modules
    assert not {"rich.markdown", "markdown_it", "rich.traceback", "rich.syntax", "pygments", "click"} & modules


def _help(args: list[str], first: str) -> str:
    """`alignbench ARGS --help` (at 123 columns) after running ``first``."""
    code = f"import runpy, sys; {first}; sys.argv = sys.argv[1:]; runpy.run_module('alignbench', run_name='__main__')"
    env = {**os.environ, "COLUMNS": "123"}
    done = subprocess.run([sys.executable, "-c", code, "alignbench", *args, "--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("args", [[], ["compare"], ["runs"], ["runs", "list"], ["study", "status"]])
def test_help_is_typers_own(args: list[str]) -> None:
    """The help rendered with the stand-ins of alignbench/_utils/deferred.py is, byte for byte, the
    help typer renders with rich.markdown and rich.traceback imported."""
    lean = _help(args, "pass")
    assert "Usage" in lean
    assert lean == _help(args, "import typer.rich_utils")


def test_runs_list_imports_no_torch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_store(url).close()  # an empty store
    modules = imported("runs", "list", "--db", url)
    assert "torch" not in modules
    assert "alignbench.cli.runs" in modules


def test_runs_list_reads_with_sqlalchemy_core_alone(demo_store: str) -> None:
    modules = imported("runs", "list", "--db", demo_store)
    assert not ({"numpy"} | NOT_FOR_READING | NOT_FOR_TABLES) & modules
    assert "typer.rich_utils" not in modules  # nothing to render as help


@pytest.mark.parametrize("args", [["compare"], ["compare", "--json"], ["report"]])
def test_compare_and_report_read_with_sqlalchemy_core_alone(demo_store: str, args: list[str]) -> None:
    modules = imported(*args, "--db", demo_store)
    assert not (NOT_FOR_READING | NOT_FOR_TABLES) & modules
    assert f"alignbench.cli.{args[0]}" in modules


@pytest.mark.parametrize("export", ["--json", "--markdown"])
def test_report_exports_read_with_sqlalchemy_core_alone(demo_store: str, export: str) -> None:
    assert not NOT_FOR_READING & imported("report", export, "--db", demo_store)


def test_report_plots_without_plotexts_documentation(demo_store: str) -> None:
    """plotext's documentation (plotext.doc, built at import) is deferred: never built by the report,
    whose plots are, byte for byte, those plotext draws with it built."""
    modules = imported("report", "--db", demo_store)
    assert "plotext" in modules and "plotext._doc.doc" not in modules
    run = "import runpy, sys; {}; sys.argv = sys.argv[1:]; runpy.run_module('alignbench', run_name='__main__')"
    lean, full = (
        subprocess.run(
            [sys.executable, "-c", run.format(first), "alignbench", "report", "--db", demo_store], capture_output=True, text=True
        )
        for first in ("pass", "import plotext")
    )
    assert lean.returncode == full.returncode == 0, lean.stderr + full.stderr
    assert "Stored runs" in lean.stdout
    assert lean.stdout == full.stdout


def test_report_imports_matplotlib_only_for_png(demo_store: str, tmp_path: Path) -> None:
    assert "matplotlib" in imported("report", "--db", demo_store, "--png", str(tmp_path / "figures"))


@pytest.mark.parametrize(
    "args", [["upgrade", "--help"], ["compare", "--help"], ["report", "--help"], ["runs", "--help"], ["study", "--help"]]
)
def test_store_commands_help_imports_no_torch(args: list[str]) -> None:
    assert "torch" not in imported(*args)

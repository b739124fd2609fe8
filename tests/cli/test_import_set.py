"""What a command imports: `alignbench --help` lists the commands without importing them, and
reading the store never pays for torch (the lazy command group of alignbench/cli/app.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignbench.store import open_store

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


def test_help_imports_no_command_nor_torch_numpy_or_sqlalchemy() -> None:
    modules = imported("--help")
    assert not {"torch", "numpy", "sqlalchemy", "sqlmodel"} & modules
    assert not any(name.startswith("alignbench.cli.") and name != "alignbench.cli.app" for name in modules)


def test_runs_list_imports_no_torch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_store(url).close()  # an empty store
    modules = imported("runs", "list", "--db", url)
    assert "torch" not in modules
    assert "alignbench.cli.runs" in modules


@pytest.mark.parametrize(
    "args", [["upgrade", "--help"], ["compare", "--help"], ["report", "--help"], ["runs", "--help"], ["study", "--help"]]
)
def test_store_commands_help_imports_no_torch(args: list[str]) -> None:
    assert "torch" not in imported(*args)

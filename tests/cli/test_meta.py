"""Meta-tests: every module imports, every command has help with an example, the public API is explicit."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import alignbench
from alignbench.cli.app import COMMANDS as LISTED
from alignbench.cli.app import app, load_command

COMMANDS = ["models", "convert", "explain", "score", "compare", "report", "train"]
MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(alignbench.__path__, prefix="alignbench.") if "migrations.env" not in name)


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"alignbench {command}" in result.output


def test_public_api_is_explicit() -> None:
    assert set(alignbench.__all__) == {"__version__", "explain", "load_model", "spearman"}
    for name in alignbench.__all__:
        assert getattr(alignbench, name) is not None


def test_importing_the_package_and_cli_does_not_import_torch() -> None:
    """Store-only work (cached score, compare, report) must not pay for importing torch."""
    code = "import sys, alignbench, alignbench.cli.app, alignbench.store; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", list(LISTED))
def test_each_listed_help_is_the_commands_own(name: str) -> None:
    """`alignbench --help` lists each command from app.COMMANDS without importing it: each line there
    is the first line of the command's docstring (a sub-app: its help)."""
    module, attribute, listed = LISTED[name]
    target = getattr(importlib.import_module(module), attribute)
    own = target.info.help if isinstance(target, typer.Typer) else target.__doc__
    assert listed == own.strip().splitlines()[0]


def test_the_listed_commands_are_the_commands() -> None:
    assert set(LISTED) == set(typer.main.get_command(app).list_commands(None))  # type: ignore[arg-type]
    for name in LISTED:
        assert load_command(name).name == name

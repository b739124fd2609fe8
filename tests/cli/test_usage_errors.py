"""Click's usage errors are one line and exit 2, like every other error (issue 25, item 12: they were
typer's five-line boxes)."""

from __future__ import annotations

import pytest

from alignbench.testing.cli import invoke, one_line_error


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["score", "--bogus"], ["No such option: --bogus", "score --help"]),
        (["report", "--bins", "many"], ["Invalid value for '--bins'", "report --help"]),
        (["runs", "delete"], ["Missing argument", "runs delete --help"]),
        (["nosuchcommand"], ["No such command 'nosuchcommand'", "--help"]),
    ],
    ids=["unknown-option", "bad-value", "missing-argument", "unknown-command"],
)
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], fragments: list[str]) -> None:
    line = one_line_error(invoke(*args), *fragments)
    assert line.startswith("error: ") and "╭" not in line


def test_help_version_and_exit_codes_are_unchanged() -> None:
    assert invoke("--version").exit_code == 0
    assert invoke("runs", "--help").exit_code == 0
    bare = invoke("runs")  # no_args_is_help: the help, as before
    assert "list" in bare.output and "error" not in bare.output

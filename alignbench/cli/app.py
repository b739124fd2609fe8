"""The ``alignbench`` command: one Typer app, one module per command (typer's one_file_per_command)."""

from __future__ import annotations

import typer

from alignbench import __version__
from alignbench.cli import compare, convert, explain, merge, models, report, runs, score, study, train, upgrade

app = typer.Typer(
    name="alignbench",
    help="How well vision models' explanations align with human attention, with and without DCLS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"alignbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """How well vision models' explanations align with human attention, with and without DCLS."""


# The first line of each command's docstring is its one-line help in `alignbench --help`.
app.command("models")(models.models)
app.command("convert")(convert.convert)
app.command("explain")(explain.explain)
app.command("score")(score.score)
app.command("compare")(compare.compare)
app.command("report")(report.report)
app.command("upgrade")(upgrade.upgrade)
app.add_typer(runs.app, name="runs")
app.command("train")(train.train)
app.add_typer(study.app, name="study")
app.command("merge")(merge.merge)


def main() -> None:
    app()

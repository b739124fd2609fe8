"""The ``alignbench`` command: one Typer app, one module per command (typer's one_file_per_command).

The commands are imported when they run, not when the app is built: ``alignbench --help`` lists them
from ``COMMANDS`` alone (no torch, numpy or SQLAlchemy), and ``alignbench runs list`` imports only
what listing runs needs.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

import typer
from typer.core import TyperCommand, TyperGroup

from alignbench import __version__
from alignbench._utils.deferred import import_deferring

if TYPE_CHECKING:  # pragma: no cover
    from typer import _click  # typer's own copy of click (importing click itself is a noticeable part of start-up)

# name -> (module, attribute: a command function or a Typer sub-app, the one-line help of
# `alignbench --help`). The help is the first line of the function's docstring, or the sub-app's
# help (tests/cli/test_meta.py holds them equal); the order is the order of `alignbench --help`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "models": (
        "alignbench.cli.models",
        "models",
        "List the model registry: families, DCLS recipes, weight sources, offline availability, CA-Stream.",
    ),
    "convert": ("alignbench.cli.convert", "convert", "Replace a model's convolutions by DCLS per its recipe and write a checkpoint."),
    "explain": ("alignbench.cli.explain", "explain", "Compute heatmaps for images and write DIR/<stem>.npy and DIR/<stem>.png overlays."),
    "score": ("alignbench.cli.score", "score", "Explain every image of a dataset, score it against the human maps, store and summarise."),
    "compare": (
        "alignbench.cli.compare",
        "compare",
        "DCLS vs baseline per architecture, with confidence intervals and rankings, from the store.",
    ),
    "report": ("alignbench.cli.report", "report", "Tables and terminal plots of everything stored; CSV/JSON/Markdown/PNG exports."),
    "upgrade": (
        "alignbench.cli.upgrade",
        "upgrade",
        "Upgrade a store written by an older alignbench to this one's schema, keeping every row.",
    ),
    "train": (
        "alignbench.cli.train",
        "train",
        "Train a model for alignment: DCLS positions, Grad-CAM consistency, CA-Stream; checkpoints with lineage in the store.",
    ),
    "merge": ("alignbench.cli.merge", "merge", "Union stores made on machines without a shared server into one."),
    "runs": ("alignbench.cli.runs", "app", "List the stored runs, delete the ones you no longer want."),
    "study": (
        "alignbench.cli.study",
        "app",
        "A whole grid of runs (models x variants x explainers x datasets x protocols) as one resumable command.",
    ),
}

_HELP = "How well vision models' explanations align with human attention, with and without DCLS."


class _Listed(TyperCommand):
    """A command as `alignbench --help` lists it (name and one-line help), until it is run."""


def load_command(name: str) -> _click.Command:
    """The click command ``name`` of ``COMMANDS``, importing its module: built by a Typer app with the
    settings of ``app``, as ``app.command(name)`` / ``app.add_typer(..., name=name)`` would build it."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    host = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich")
    if isinstance(target, typer.Typer):
        host.add_typer(target, name=name)
    else:
        host.command(name)(target)
    return typer.main.get_group(host).commands[name]


class LazyGroup(TyperGroup):
    """A Typer group whose commands are imported on first use (click's lazy-loading pattern)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, (_, _, help_line) in COMMANDS.items():
            self.commands.setdefault(name, _Listed(name, help=help_line))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **kwargs):
        argv = sys.argv[1:] if args is None else list(args)
        if not argv or "--help" in argv:
            # typer.rich_utils renders the help; it imports rich.markdown and rich.traceback for
            # rich_markup_mode="markdown" and pretty exceptions, both off here: deferred, the help is
            # typer's own, byte for byte (tests/cli/test_import_set.py), sooner (README, Performance)
            import_deferring("typer.rich_utils", {"rich.markdown": ("Markdown",), "rich.traceback": ("Traceback",)})
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **kwargs)
        # Standalone, as click runs it, but a usage error (an unknown option, a missing argument, a
        # value of the wrong type) is one line and exit 2 like every other error, not typer's box.
        from typer import _click

        try:
            result = super().main(args, prog_name, complete_var, False, **kwargs)
        except _click.exceptions.UsageError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # the help is printed already
                sys.exit(error.exit_code)
            where = f"; see `{error.ctx.command_path} --help`" if error.ctx is not None else ""
            print(f"error: {' '.join(error.format_message().split()).rstrip('.')}{where}", file=sys.stderr)
            sys.exit(2)
        except _click.exceptions.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except _click.exceptions.Abort:
            print("Aborted!", file=sys.stderr)
            sys.exit(1)
        sys.exit(result if type(result) is int else 0)  # non-standalone click returns typer.Exit's code (a command returns None)

    def resolve_command(self, ctx: _click.Context, args: list[str]):
        if args and isinstance(self.commands.get(args[0]), _Listed):
            self.commands[args[0]] = load_command(args[0])
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="alignbench",
    cls=LazyGroup,
    help=_HELP,
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


def main() -> None:
    app()

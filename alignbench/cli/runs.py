"""`alignbench runs list|delete|prune`: parse options, call alignbench.store.maintenance, print what it did."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from alignbench.cli import _basic_options as o
from alignbench.cli._errors import guarded, stdout_console
from alignbench.models.specs import variant_name

app = typer.Typer(
    name="runs", help="List the stored runs, delete the ones you no longer want.", no_args_is_help=True, rich_markup_mode="rich"
)


def _as_dict(run, recheck: frozenset[int] = frozenset()) -> dict:
    return {
        "run_id": run.run_id,
        "model": run.model,
        "dcls": run.dcls,
        "ca_stream": run.ca_stream,
        "tag": run.tag,
        "explainer": run.method,
        "dataset": run.dataset,
        "dataset_location": run.dataset_location,
        "protocol": run.protocol,
        "metrics": run.metrics.split(","),
        "status": run.status,
        "n_rows": run.n_rows,
        "n_images": run.n_images,
        "updated_at": str(run.updated_at),
        "recheck": run.run_id in recheck,  # rows written by an older scorer: `score` recomputes them
    }


def _model(run) -> str:
    return variant_name(run.model, ca_stream=run.ca_stream, tag=run.tag)  # DCLS has a column of its own


def _table(runs, title: str, recheck: frozenset[int] = frozenset()) -> Table:
    from alignbench.datasets import dataset_label

    table = Table(title=title)
    for name in ("run", "model", "DCLS", "explainer", "dataset", "protocol", "metrics", "status", "rows / images", "updated"):
        table.add_column(name, justify="right" if name in ("run", "rows / images") else "left", overflow="fold")
    for run in runs:
        table.add_row(
            str(run.run_id),
            _model(run),
            "yes" if run.dcls else "no",
            run.method,
            dataset_label(run.dataset, run.dataset_location),
            run.protocol,
            run.metrics,
            run.status + (" (recheck)" if run.run_id in recheck else ""),
            f"{run.n_rows:,} / {run.n_images:,}",
            str(run.updated_at)[:19],
        )
    return table


@app.command("list")
@guarded
def list_runs(
    empty: Annotated[bool, typer.Option("--empty", help="Only the runs with no stored row.")] = False,
    db: o.Db = None,
    as_json: o.Json = False,
) -> None:
    """Every stored run with its status and how many of its images have a row; reads the store only.

    A run whose process is gone (killed, crashed) shows as interrupted: `alignbench score` with the same options resumes it. A run marked (recheck) was scored by an older alignbench that gave constant maps a score: `alignbench score` recomputes those rows.

    Example: [bold]alignbench runs list --empty[/]
    """
    from alignbench.analysis import NOTHING_STORED
    from alignbench.store.maintenance import list_stored_runs
    from alignbench.store.recheck import runs_to_recheck

    runs = list_stored_runs(db, empty=empty)
    recheck = frozenset(runs_to_recheck(db)) if runs else frozenset()
    if as_json:
        typer.echo(json.dumps([_as_dict(run, recheck) for run in runs]))
    elif not runs:
        typer.echo("no runs with no stored row" if empty else NOTHING_STORED)
    else:
        stdout_console().print(_table(runs, "Stored runs", recheck))
        if recheck:
            typer.echo(
                f"{len(recheck)} run(s) marked (recheck) were scored by an older alignbench, which scored constant maps: "
                "`alignbench score` with the same options recomputes just their rows that may be affected"
            )


def _report(result) -> None:
    if not result.runs:
        typer.echo(f"nothing to delete in {result.url}")
        return
    ids = ", ".join(str(run.run_id) for run in result.runs)
    typer.echo(f"deleted {len(result.runs)} run(s) ({ids}) and their {result.rows:,} image row(s) from {result.url}")


@app.command("delete")
@guarded
def delete(
    run_ids: Annotated[
        list[int], typer.Argument(help="Ids of the runs to delete (`alignbench runs list` shows them).", show_default=False)
    ],
    db: o.Db = None,
) -> None:
    """Delete runs with all their rows, in one transaction (an unknown id or a live run deletes nothing).

    Example: [bold]alignbench runs delete 4 7[/]
    """
    from alignbench.store.maintenance import delete_runs

    _report(delete_runs(db, run_ids))


@app.command("prune")
@guarded
def prune(
    empty: Annotated[
        bool, typer.Option("--empty", help="Delete every run with no stored row (one stopped before its first batch).")
    ] = False,
    db: o.Db = None,
) -> None:
    """Delete the runs no one wants, in one transaction: with --empty, those with no stored row.

    A run that a live process is still computing is kept.

    Example: [bold]alignbench runs prune --empty[/]
    """
    from alignbench.store.maintenance import prune_runs

    _report(prune_runs(db, empty=empty))

"""`alignbench models`: the registry as a table (or JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from alignbench.cli import _basic_options as o
from alignbench.cli._errors import guarded, stdout_console
from alignbench.cli._format import number
from alignbench.models.specs import variant_name


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _millions(count: int | None) -> str:
    return "-" if count is None else f"{count / 1e6:.2f} M"


def _ca_stream_note(rows) -> str:
    """Which models take --ca-stream and what the stream adds (a caption: the table is full width)."""
    fits = [row for row in rows if row.ca_stream]
    if not fits:
        return "--ca-stream fits none of these models."
    counts = sorted(row.params_ca_stream for row in fits)
    which = "every model above" if len(fits) == len(rows) else "all but " + ", ".join(r.name for r in rows if not r.ca_stream)
    return (
        f"--ca-stream (CA-Stream) fits {which}, adding {_millions(counts[0])}–{_millions(counts[-1])} "
        "parameters (--json: params_ca_stream)."
    )


def _trained(db: str | None, as_json: bool) -> None:
    from alignbench.analysis.lineage import trained_models

    rows = trained_models(db)
    if as_json:
        print(json.dumps([row.to_json() for row in rows], indent=1, default=str))
        return
    table = Table(
        title="trained models",
        caption="score one with `alignbench score --trained TAG`; compare each with its parent with `alignbench compare --against parent`",
    )
    for column in ("tag", "model", "method", "parent", "steps", "final loss", "--val top-1", "positions moved", "checkpoint"):
        table.add_column(column, justify="right" if column in ("steps", "final loss") else "left", no_wrap=True)
    for row in rows:
        lineage = row.lineage
        top1 = "—" if lineage.get("top1_before") is None else f"{number(lineage.get('top1_before'))} → {number(lineage.get('top1_after'))}"
        moved = "—" if lineage.get("positions_shift_max") is None else f"max {lineage['positions_shift_max']:.3f} px"
        checkpoint = Path(lineage["checkpoint"]) if lineage.get("checkpoint") else None  # its --out and file name
        table.add_row(
            row.label,
            variant_name(row.name, dcls=row.dcls, ca_stream=row.ca_stream),
            row.origin,
            row.parent_label,
            str(lineage.get("steps", "—")),
            number(lineage.get("final_loss")),
            top1,
            moved,
            f"{checkpoint.parent.name}/{checkpoint.name}" if checkpoint else "—",
        )
    stdout_console().print(table)


@guarded
def models(
    trained: Annotated[
        bool, typer.Option("--trained", help="List the models `alignbench train` made (from the store), with their lineage.")
    ] = False,
    db: o.Db = None,
    as_json: o.Json = False,
) -> None:
    """List the model registry: families, DCLS recipes, weight sources, offline availability, CA-Stream.

    With --trained: the trained models in the store, each with its parent, method, steps, loss and top-1.

    Example: [bold]alignbench models --json[/]
    """
    if trained:
        _trained(db, as_json)
        return
    from alignbench.models import catalog

    rows = catalog()
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=1))
        return
    table = Table(
        title="alignbench models",
        caption="* in the paper. Any other timm model name works too "
        f"(generic recipe: depthwise convs, v1 17×17, 34 elements).\n{_ca_stream_note(rows)}",
    )
    for column in ("name", "family", "params", "+DCLS", "DCLS recipe", "dense weights", "DCLS weights", "offline"):
        table.add_column(column, justify="right" if column in ("params", "+DCLS") else "left")
    for row in rows:
        table.add_row(
            row.name + (" *" if row.in_paper else ""),
            row.family,
            _millions(row.params),
            _millions(row.params_dcls),
            row.recipe_short or "-",
            row.dense_weights,
            row.dcls_weights or "-",
            f"{_yes_no(row.dense_offline)}/{_yes_no(row.dcls_offline)}",
        )
    stdout_console().print(table)

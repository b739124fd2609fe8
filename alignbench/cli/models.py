"""`alignbench models`: the registry as a table (or JSON)."""

from __future__ import annotations

import json

from rich.table import Table

from alignbench.cli import _options as o
from alignbench.cli._errors import guarded, stdout_console


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
    return (f"--ca-stream (CA-Stream) fits {which}, adding {_millions(counts[0])}–{_millions(counts[-1])} "
            "parameters (--json: params_ca_stream).")


@guarded
def models(as_json: o.Json = False) -> None:
    """List the model registry: families, DCLS recipes, weight sources, offline availability, CA-Stream.

    Example: [bold]alignbench models --json[/]
    """
    from alignbench.models import catalog

    rows = catalog()
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=1))
        return
    table = Table(title="alignbench models", caption="* in the paper. Any other timm model name works too "
                  f"(generic recipe: depthwise convs, v1 17×17, 34 elements).\n{_ca_stream_note(rows)}")
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

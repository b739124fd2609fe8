"""`alignbench merge SRC... --into DST`: parse options, call alignbench.store.merge.merge_stores, print what it did."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from alignbench.cli._errors import err_console, guarded, stdout_console
from alignbench.errors import AlignbenchError

SHOWN_CONFLICTS = 20


def _summary(result) -> Table:
    table = Table(title=f"merged into {result.into}")
    for name in (
        "source",
        "revision",
        "models",
        "explainers",
        "datasets",
        "runs new",
        "runs matched",
        "rows added",
        "rows equal",
        "thumbnails",
        "conflicts",
        "replaced",
    ):
        table.add_column(name, justify="left" if name == "source" else "right")
    for s in result.sources:
        table.add_row(
            s.source,
            s.revision,
            *(
                f"{n:,}"
                for n in (
                    s.models,
                    s.explainers,
                    s.datasets,
                    s.runs,
                    s.runs_matched,
                    s.rows,
                    s.rows_same,
                    s.thumbnails,
                    len(s.conflicts),
                    s.replaced,
                )
            ),
        )
    return table


def _conflicts(result) -> Table:
    table = Table(title=f"conflicting rows (first {min(SHOWN_CONFLICTS, len(result.conflicts))} of {len(result.conflicts):,})")
    for name in ("source", "run", "model", "image", "what", "column", "in DST", "in source", "kept"):
        table.add_column(name)
    for c in result.conflicts[:SHOWN_CONFLICTS]:
        column = c.columns[0] + (f" (+{len(c.columns) - 1})" if len(c.columns) > 1 else "")
        shown = [c.kept[c.columns[0]], c.other[c.columns[0]]]
        shown = [f"<{len(v)} bytes>" if isinstance(v, (bytes, memoryview)) else str(v) for v in shown]
        table.add_row(c.source, str(c.run_id), c.model, c.image_id, c.kind, column, *shown, "source (newer)" if c.replaced else "DST")
    return table


@guarded
def merge(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Stores to merge from (file paths, e.g. gpu1.db, or database URLs); only read.", metavar="SRC", show_default=False
        ),
    ],
    into: Annotated[
        str, typer.Option("--into", help="The store to merge into, a file path or URL (created if missing).", show_default=False)
    ],
    prefer: Annotated[str, typer.Option("--prefer", help="Conflicting rows: keep DST's (into) or the newer row (newer).")] = "into",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")] = False,
) -> None:
    """Union stores made on machines without a shared server into one.

    Models, explainer settings and datasets are matched by identity (weights fingerprint, method and parameters, name and content fingerprint), runs by key, image rows by run and image: what DST lacks is added and equal rows are left alone, so merging twice changes nothing. Rows both stores have with different values are listed and DST's are kept (exit 1), unless --prefer newer. A store from a newer alignbench is refused.

    Example: [bold]alignbench merge node1.db node2.db --into study.db[/]
    """
    from alignbench.store.merge import merge_stores

    if not sources:
        raise AlignbenchError("no store to merge; give SRC stores, e.g. alignbench merge a.db b.db --into all.db")
    result = merge_stores(sources, into, prefer=prefer)
    if as_json:
        document = {
            "into": result.into,
            "prefer": result.prefer,
            "sources": [
                {k: v for k, v in s.__dict__.items() if k != "conflicts"} | {"conflicts": len(s.conflicts), "replaced": s.replaced}
                for s in result.sources
            ],
            "conflicts": [c.to_json() for c in result.conflicts],
        }
        typer.echo(json.dumps(document, default=str))
    else:
        console = stdout_console()
        console.print(_summary(result))
        if result.conflicts:
            console.print(_conflicts(result))
    if result.unresolved:
        if result.prefer == "newer":  # what is left are rows created at the same moment in both stores
            message = (
                f"{result.unresolved:,} conflicting row(s) were created at the same time in both stores, so neither is newer; "
                f"kept as they are in {result.into} (delete the run you do not want with `alignbench runs delete`, then merge again)"
            )
        else:
            message = f"{result.unresolved:,} conflicting row(s) kept as they are in {result.into}; --prefer newer takes the newer rows"
        err_console.print(message, markup=False, highlight=False)
        raise typer.Exit(1)

"""`alignbench study run|status STUDY`: parse options, call alignbench.scoring.study, print tables or JSON."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from alignbench.cli import _basic_options as o
from alignbench.cli._errors import err_console, guarded, stdout_console
from alignbench.cli._format import number
from alignbench.distributed import is_main_process

app = typer.Typer(
    name="study",
    help="A whole grid of runs (models x variants x explainers x datasets x protocols) as one resumable command.",
    no_args_is_help=True,
)

StudyArgument = Annotated[
    str,
    typer.Argument(
        help="A study TOML file, or a built-in study: paper (the paper's 32 runs), demo (4 small offline runs).", show_default=False
    ),
]
Limit = Annotated[
    Optional[int], typer.Option("--limit", help="Score only the first N images of each run (overrides the study's).", show_default=False)
]

_STATE_STYLE = {"done": "green", "partial": "yellow", "missing": "red"}


def _status_table(study, cells) -> Table:
    by_name = any(not c.exact and c.run_id is not None for c in cells)
    caption = "≈: matched by model name and settings (the weights or data to make the run key are not on this machine)" if by_name else None
    table = Table(title=f"study {study.name} · {study.source}", caption=caption, caption_justify="left")
    for name in ("#", "model", "DCLS", "explainer", "dataset", "protocol", "state", "images", "run"):
        table.add_column(name, justify="right" if name in ("#", "images", "run") else "left")
    for index, cell in enumerate(cells, start=1):
        request = cell.request
        params = ", ".join(f"{k}={v}" for k, v in sorted(request.explainer_params.items()))
        wanted = "?" if cell.wanted is None else f"{cell.wanted:,}"
        state = cell.state + (
            "" if cell.run_status in (None, "complete", "partial") or cell.state == "missing" else f" ({cell.run_status})"
        )
        table.add_row(
            str(index),
            request.model.tag or request.model.name,
            "yes" if request.model.dcls else "no",
            request.explainer + (f" ({params})" if params else ""),
            request.dataset,
            request.protocol + ("" if request.precision == "fp32" else f" · {request.precision}"),
            f"[{_STATE_STYLE[cell.state]}]{state}[/]",
            f"{cell.stored:,} / {wanted}",
            ("" if cell.run_id is None else str(cell.run_id)) + ("" if cell.exact or cell.run_id is None else " ≈"),
        )
    return table


def _totals(cells) -> str:
    count = {state: sum(c.state == state for c in cells) for state in ("done", "partial", "missing")}
    stored = sum(c.stored for c in cells)
    wanted = [c.wanted for c in cells]
    images = f"{stored:,} of {sum(wanted):,} images" if None not in wanted else f"{stored:,} images stored"
    return f"{len(cells)} runs: {count['done']} done, {count['partial']} partial, {count['missing']} missing · {images}"


@app.command("status")
@guarded
def status(study: StudyArgument, limit: Limit = None, db: o.Db = None, as_json: o.Json = False) -> None:
    """Done / partial / missing for every run of a study, with image counts, from the store alone.

    Reads the store only: nothing is created or computed (no torch for registry models).

    Example: [bold]alignbench study status paper --db postgresql://me@dbhost/alignbench[/]
    """
    from alignbench.scoring.study import load_study, study_status

    parsed = load_study(study, db=db, files=False)  # a cell whose files are not here is shown, matched by name
    cells = study_status(parsed.requests(limit=limit), db=db)
    if as_json:
        typer.echo(json.dumps({"study": parsed.name, "source": parsed.source, "cells": [c.to_json() for c in cells]}, default=str))
        return
    console = stdout_console()
    console.print(_status_table(parsed, cells))
    console.print(_totals(cells))


@app.command("run")
@guarded
def run(
    study: StudyArgument,
    limit: Limit = None,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", help="Images per forward/backward pass (overrides the study's).", show_default=False)
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", help="DataLoader worker processes per run (default: cores - 1).", show_default=False)
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Recompute every run even if stored (rows are replaced as they are recomputed).")
    ] = False,
    device: o.Device = "auto",
    db: o.Db = None,
    as_json: o.Json = False,
) -> None:
    """Run every cell of a study that the store does not have complete, then compare and rank.

    Each cell is scored exactly as `alignbench score` would (the same run key), so complete runs are read from the store and a study that stops resumes where it stopped. Under torchrun, every process runs the same cells and they share each run's images.

    Example: [bold]alignbench study run demo[/]

    On 8 GPUs: [bold]torchrun --nproc_per_node 8 -m alignbench study run paper --device cuda[/]
    """
    from alignbench.analysis.compare import compare_results
    from alignbench.cli.compare import print_result
    from alignbench.cli.score import scoring_progress
    from alignbench.scoring.study import describe, load_study, run_study

    parsed = load_study(study, db=db)
    requests = parsed.requests(limit=limit, batch_size=batch_size, workers=workers, device=device, force=force or None)
    main = is_main_process()

    def on_cell(index: int, total: int, request) -> None:
        if main:
            err_console.print(f"[{index + 1}/{total}] {describe(request)}", markup=False, highlight=False)

    def on_result(index: int, result) -> None:
        if main:
            how = "in the store" if result.cached else f"computed {result.computed_images:,} images in {result.seconds:.1f} s"
            mean = number(result.mean_spearman, missing="n/a")
            err_console.print(
                f"    run {result.run_id}: {result.status}, {result.n_scored:,}/{result.n_images:,} scored, mean spearman {mean} ({how})",
                markup=False,
                highlight=False,
            )

    progress, on_progress = scoring_progress()
    try:
        done = run_study(
            requests,
            db=db,
            on_cell=on_cell,
            on_result=on_result,
            progress=on_progress,
            compare=lambda results: compare_results(results, db=db),
        )
    finally:
        progress.stop()
    if not main:
        return
    if as_json:
        document = {
            "study": parsed.name,
            "runs": [result.to_json() for result in done.results],
            "compare": [] if done.comparison is None else done.comparison.to_json(),
        }
        typer.echo(json.dumps(document, default=str))
        return
    console = stdout_console()
    if done.comparison is not None:
        print_result(done.comparison, console)
    console.print(
        f"study {parsed.name}: {len(done.results)} runs, {done.computed} computed now, {len(done.results) - done.computed} already in the store"
    )

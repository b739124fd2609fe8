"""`alignbench report`: parse options, call alignbench.analysis.report.report, print or export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from alignbench.analysis import DEFAULT_BINS
from alignbench.cli import _basic_options as o
from alignbench.cli._errors import err_console, guarded, stdout_console
from alignbench.cli._format import number
from alignbench.errors import AlignbenchError

if TYPE_CHECKING:  # the analysis modules import numpy: loaded only when the command runs
    from alignbench.analysis.report import Report
    from alignbench.analysis.runs import RunFilter


def _runs_table(report: Report) -> Table:
    from alignbench.analysis.runs import hidden_note
    from alignbench.datasets import dataset_label

    metric = report.metric
    caption = "score: mean / human ceiling where the dataset has one (the alignment score), else the mean"
    if report.hidden_empty:
        caption += f" · {hidden_note(report.hidden_empty)}"
    table = Table(title="Stored runs", caption=caption, caption_justify="left")
    for name in (
        "run",
        "model",
        "DCLS",
        "params",
        "explainer",
        "dataset",
        "protocol",
        "status",
        "scored / images",
        "skipped",
        f"mean {metric}",
        "score",
    ):
        table.add_column(
            name, justify="right" if name in ("run", "params", "scored / images", "skipped", f"mean {metric}", "score") else "left"
        )
    for run in report.runs:
        v = run.view
        params = "" if not v.param_count else f"{v.param_count / 1e6:.1f} M"
        table.add_row(
            str(run.run_id),
            "[italic]centre bias (reference)[/]" if run.is_reference else run.model_label,
            "" if run.is_reference else ("yes" if v.dcls else "no"),
            params,
            v.method,
            dataset_label(v.dataset, v.dataset_location),
            v.protocol,
            v.status,
            f"{run.n_scored:,} / {v.n_images:,}",
            f"{run.n_rows - run.n_scored:,}",
            number(run.mean),
            number(run.score),
        )
    return table


def _pairs_table(report: Report) -> Table | None:
    if not report.pairings:
        return None
    table = Table(
        title="DCLS vs baseline (the paper's table)",
        caption="on the images both runs scored; centre bias on the same images · confidence intervals and tests: `alignbench compare`",
        caption_justify="left",
    )
    for name in ("model", "explainer", "dataset", "protocol", "baseline", "DCLS", "Δ", "pairs", "centre bias"):
        table.add_column(name, justify="left" if name in ("model", "explainer", "dataset", "protocol") else "right")
    for p in sorted(report.pairings, key=lambda p: (p.group.dataset, p.group.protocol, p.model, p.group.method)):
        delta = p.dcls_score - p.baseline_score if p.complete and p.n_pairs else None
        table.add_row(
            p.model,
            p.group.explainer_label,
            p.group.dataset_label,
            p.group.protocol,
            number(p.baseline_score),
            number(p.dcls_score),
            number(delta, signed=True),
            f"{p.n_pairs:,}" if p.complete else "—",
            number(p.reference_score),
        )
    return table


def _fits_table(report: Report) -> Table | None:
    if not report.parameter_fits:
        return None
    table = Table(title="Parameter count vs score (baselines)")
    for name in ("explainer", "dataset", "protocol", "models", "Pearson r", "Spearman ρ"):
        table.add_column(name, justify="right" if name in ("models", "Pearson r", "Spearman ρ") else "left")
    for fit in report.parameter_fits:
        table.add_row(
            fit.group.explainer_label,
            fit.group.dataset_label,
            fit.group.protocol,
            str(len(fit.models)),
            number(fit.pearson_r, signed=True),
            number(fit.spearman_rho, signed=True),
        )
    return table


def _worst_table(report: Report) -> Table | None:
    if report.worst_run is None:
        return None
    run = report.worst_run
    table = Table(title=f"Images run {run.run_id} ({run.display_name}, {run.view.method}) agrees with humans least on")
    for name in ("image index", "image id", "target", "prediction", "confidence", report.metric):
        table.add_column(name, justify="left" if name == "image id" else "right")
    for w in report.worst:
        table.add_row(
            str(w.image_index),
            w.image_id,
            "" if w.target is None else str(w.target),
            "" if w.prediction is None else str(w.prediction),
            "" if w.confidence is None else f"{w.confidence:.3f}",
            f"{w.value:+.4f}",
        )
    return table


def _print_report(report: Report, console: Console) -> None:
    from alignbench.analysis.plots import terminal_figures  # imports plotext

    for table in (_runs_table(report), _pairs_table(report), _fits_table(report)):
        if table is not None:
            console.print(table)
            console.print()
    colour = console.is_terminal and not console.no_color
    for figure in terminal_figures(report, width=min(console.width, 140), colour=colour):
        # plotext's own output, colour codes included: not rich markup, never wrapped
        console.print(Text.from_ansi(figure), crop=False, soft_wrap=True)
        console.print()
    worst = _worst_table(report)
    if worst is not None:
        console.print(worst)


def _write_html(
    directory: Path, db: str | None, runs: RunFilter, *, gallery: int, seed: int, bins: int, force: bool, device: str, others: tuple
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from alignbench.html_report import write_html_report

    if any(others):
        raise AlignbenchError("--html writes its own report; run --csv, --png, --worst, --json or --markdown separately")
    progress = Progress(
        TextColumn("[bold]gallery maps"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    task = None

    def on_progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:  # started only when maps are computed: a report from stored maps shows none
            progress.start()
            task = progress.add_task("maps", total=total)
        progress.update(task, completed=done, total=total)

    try:
        result = write_html_report(
            directory,
            db,
            runs,
            gallery=gallery,
            seed=seed,
            bins=bins,
            force=force,
            device=device,
            progress=on_progress,
        )
    finally:
        progress.stop()
    for run_id, why in sorted(result.unavailable.items()):
        err_console.print(f"run {run_id}: maps not shown ({why})", markup=False, highlight=False)
    if result.message:
        err_console.print(result.message, markup=False, highlight=False)
    elif result.thumbnails_computed:
        err_console.print(f"computed and stored the gallery maps of {result.thumbnails_computed} run images", markup=False, highlight=False)
    typer.echo(str(result.index.resolve()))


@guarded
def report(
    explainer: o.ExplainerFilter = None,
    dataset: o.DatasetFilter = None,
    protocol: o.ProtocolFilter = None,
    metric: o.Metric = "spearman",
    run: o.RunId = None,
    worst: Annotated[
        Optional[int],
        typer.Option(
            "--worst", help="With --run: list the N images the model agrees with humans least on (default 10).", show_default=False
        ),
    ] = None,
    csv: Annotated[
        Optional[Path],
        typer.Option("--csv", help="Write the runs table (with --run: the worst images) to this CSV file.", show_default=False),
    ] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the tables as Markdown instead of the terminal report.")] = False,
    png: Annotated[
        Optional[Path], typer.Option("--png", help="Write the figures as PNG files into this directory.", show_default=False)
    ] = None,
    bins: Annotated[int, typer.Option("--bins", help="Histogram bins.")] = DEFAULT_BINS,
    show_all: o.ShowAll = False,
    html: Annotated[
        Optional[Path],
        typer.Option(
            "--html",
            help="Write a static HTML report with map galleries into this directory (with --run: that run's page).",
            show_default=False,
        ),
    ] = None,
    gallery: Annotated[
        int, typer.Option("--gallery", help="With --html: images per gallery section (best, worst, random); 0: no galleries.")
    ] = 8,
    seed: Annotated[int, typer.Option("--seed", help="With --html: the seed of the galleries' random images.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="With --html: write into a directory that holds other files (they are kept).")
    ] = False,
    device: o.Device = "auto",
    db: o.Db = None,
    as_json: o.Json = False,
) -> None:
    """Tables and terminal plots of everything stored; CSV/JSON/Markdown/PNG exports.

    The paper's table and figures for the stored runs: DCLS vs baseline scatter (Fig. 2), per-model bars per explainer with and without DCLS (Fig. 3), parameter count vs score with the correlation (Fig. 4), and a histogram of per-image scores per run. Reads the store only; an empty store says what to run and exits 0.

    With --html DIR: one self-contained static page (no server, no network) with the runs, comparisons, figures and galleries of image, human map, each variant's map and the centre-bias map; the gallery maps are computed once (as `score` computes them) and stored, so the next report is fast.

    Example: [bold]alignbench report --csv results.csv[/]   [bold]alignbench report --run 3 --worst 20[/]   [bold]alignbench report --html report[/]
    """
    if as_json and markdown:
        raise AlignbenchError("--json and --markdown both print the report; choose one")
    runs = o.run_filter(explainer, dataset, protocol, metric, run, show_all)
    if html is not None:
        _write_html(
            html, db, runs, gallery=gallery, seed=seed, bins=bins, force=force, device=device, others=(csv, png, worst, as_json or markdown)
        )
        return
    from alignbench._utils.paths import check_output_dir, check_output_file
    from alignbench.analysis import exports
    from alignbench.analysis.report import report as build

    if csv is not None:  # before the report is built, not after
        check_output_file(csv, "--csv")
    if png is not None:
        check_output_dir(png, "--png")
    result = build(db, runs, worst=worst, bins=bins)
    if result.empty:
        _print_empty(result, as_json=as_json, markdown=markdown)  # nothing stored yet is not an error: exit 0
        return
    _export(result, csv=csv, png=png)
    if as_json:
        typer.echo(json.dumps(exports.json_document(result), allow_nan=False))
    elif markdown:
        sys.stdout.write(exports.to_markdown(result))
    else:
        _print_report(result, stdout_console())


def _print_empty(result: Report, *, as_json: bool, markdown: bool) -> None:
    """An empty report: its message (what to run), in the form asked for."""
    from alignbench.analysis import exports

    if as_json:
        typer.echo(json.dumps(exports.json_document(result), allow_nan=False))
        err_console.print(result.message, markup=False, highlight=False)
    elif markdown:
        typer.echo(f"_{result.message}_")
    else:
        typer.echo(result.message)


def _export(result: Report, *, csv: Path | None, png: Path | None) -> None:
    """Write the --csv table and the --png figures, each file named on stderr."""
    from alignbench.analysis import exports

    if csv is not None:
        path = exports.write_csv(result, csv)
        err_console.print(f"wrote {exports.main_table(result)} table to {path}", markup=False, highlight=False)
    if png is not None:
        from alignbench.analysis.plots import write_pngs

        for path in write_pngs(result, png):
            err_console.print(f"wrote {path}", markup=False, highlight=False)

"""`alignbench compare`: parse options, call alignbench.analysis.compare.compare, print tables or JSON."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from alignbench.cli import _basic_options as o
from alignbench.cli._errors import err_console, guarded, stdout_console
from alignbench.cli._format import number

if TYPE_CHECKING:  # the analysis modules import numpy: loaded only when the command runs
    from alignbench.analysis.compare import CompareResult, GroupComparison

_VERDICT_STYLE = {"better": "bold green", "worse": "bold red", "no significant difference": "", "identical": "", "too few pairs": "yellow"}
# per kind of comparison: (title, column of side A, column of side B, Δ as words, what a row is)
_KINDS = {
    "dcls-vs-baseline": ("DCLS vs baseline", "baseline", "DCLS", "DCLS − baseline", "architectures"),
    "against-parent": ("trained vs parent", "parent", "trained", "trained − parent", "trained models"),
    "runs": ("run B vs run A", "run A", "run B", "run B − run A", "pairs"),
}


def _p_value(p: float | None) -> str:
    if p is None:
        return "—"
    if p == 0.0:
        return "< 1e-300"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _row_name(row) -> str:
    """The model column: the architecture, with the trained variant's tag; run pairs name both runs."""
    if row.kind == "runs":
        return f"{row.dcls_label or '—'}\nvs {row.baseline_label or '—'}"
    return f"{row.model} · {row.variant}" if row.variant else row.model


def _comparison_table(group: GroupComparison, n_resamples: int, kind: str = "dcls-vs-baseline") -> Table:
    from alignbench.analysis.compare import ALPHA, CONFIDENCE, IDENTICAL_RELATIVE

    title, side_a, side_b, delta, _ = _KINDS[kind]
    table = Table(
        title=f"{title} ({group.scale_name}) · {group.group.label}",
        caption=(
            f"scores: {group.scale}, on the images both runs scored · Δ = {delta} · "
            f"{CONFIDENCE:.0%} CI: paired bootstrap, {n_resamples} resamples · p: Wilcoxon signed-rank · "
            f"verdict: CI excludes 0 and p < {ALPHA}; identical: every image within {IDENTICAL_RELATIVE:g} of the metric's range · "
            "centre bias: the reference on the same images"
        ),
        caption_justify="left",
    )
    for name in ("model", side_a, side_b, "Δ", f"{CONFIDENCE:.0%} CI", "p", "pairs", "centre bias", "verdict"):
        table.add_column(name, justify="left" if name in ("model", "verdict") else "right")
    for row in group.rows:
        ci = "—" if row.ci_low is None else f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
        style = _VERDICT_STYLE.get(row.verdict, "yellow")
        table.add_row(
            _row_name(row),
            number(row.baseline),
            number(row.dcls),
            number(row.delta, signed=True),
            ci,
            _p_value(row.p_value),
            f"{row.n_pairs:,}" if row.baseline is not None and row.dcls is not None else "—",
            number(row.centre_bias),
            f"[{style}]{row.verdict}[/]" if style else row.verdict,
        )
    if group.reference is not None:
        table.add_section()
        table.add_row(
            "[italic]centre bias (model-free reference)[/]",
            "",
            "",
            "",
            "",
            "",
            f"{group.reference.n_scored:,}",
            number(group.reference.score),
            "",
        )
    return table


def _ranking_table(group: GroupComparison) -> Table:
    metric = group.ranking[0].metric
    table = Table(title=f"Ranking ({group.scale_name}) · {group.group.label}", caption=f"score: {group.scale}", caption_justify="left")
    for name in ("#", "run", "model", "DCLS", "score", f"mean {metric}", "scored / images", "status"):
        table.add_column(name, justify="left" if name in ("model", "status") else "right")
    rank = 0
    for run in group.ranking:
        if not run.is_reference:
            rank += 1
        table.add_row(
            "" if run.is_reference else str(rank),
            str(run.run_id),
            "[italic]centre bias (reference)[/]" if run.is_reference else run.model_label,
            "" if run.is_reference else ("yes" if run.view.dcls else "no"),
            number(run.score),
            number(run.mean),
            f"{run.n_scored:,} / {run.view.n_images:,}",
            run.view.status,
        )
    return table


def _summary(group: GroupComparison, kind: str = "dcls-vs-baseline") -> str | None:
    complete = [r for r in group.rows if r.baseline is not None and r.dcls is not None]
    if not complete or kind == "runs":
        return None
    _, _, side_b, _, rows = _KINDS[kind]
    if any(r.variant for r in complete) and kind == "dcls-vs-baseline":
        rows = "DCLS models"  # the architectures' own DCLS weights and the trained variants
    verdicts = ("better", "worse", "no significant difference", "identical", "too few pairs")
    count = {v: sum(r.verdict == v for r in complete) for v in verdicts}
    return (
        f"{side_b} better on {count['better']} of {len(complete)} {rows}, worse on {count['worse']}, "
        f"no significant difference on {count['no significant difference']}"
        + (f", identical on {count['identical']}" if count["identical"] else "")
        + (f", too few pairs on {count['too few pairs']}" if count["too few pairs"] else "")
    )


def _notes(group: GroupComparison, metric: str) -> list[str]:
    """What to know about a group's comparisons, and what to run for a missing side or reference."""
    from alignbench.datasets import DATASETS  # the registry (torch-free)
    from alignbench.metrics import metric_spec  # plain data (torch-free)

    notes = []
    for row in group.rows:
        notes.extend(row.notes)
        if row.verdict in ("missing DCLS run", "missing baseline run"):
            flag = " --dcls" if row.dcls is None else ""
            command = ["alignbench", "score", row.model, *flag.split(), "--explainer", row.explainer, "--dataset", row.dataset]
            if row.dataset_location and row.dataset in DATASETS and DATASETS[row.dataset].needs_data_dir:
                command += ["--data-dir", row.dataset_location]
            command += ["--protocol", row.protocol]
            notes.append(f"{row.model}: {row.verdict}; run `{shlex.join(command)}` to compare")  # pasted into a shell as it is
    # the centre-bias run scores the metrics that read reference maps or fixations; for the others it has no value
    spec = metric_spec(metric)
    if group.reference is None and (spec.needs_reference or spec.needs_fixations):
        notes.append(
            f"no centre-bias reference stored for {group.group.dataset} / {group.group.protocol}; "
            "`alignbench score` records it with its next run on that dataset"
        )
    return notes


def print_result(result: CompareResult, console: Console) -> None:
    from alignbench.analysis.runs import hidden_note

    for group in result.groups:
        console.print(_comparison_table(group, result.n_resamples, result.kind))
        summary = _summary(group, result.kind)
        if summary:
            console.print(summary)
        for note in _notes(group, result.metric):
            console.print(f"• {note}", style="dim", markup=False, highlight=False)
        console.print()
    for group in result.groups:
        console.print(_ranking_table(group))
        console.print()
    if result.hidden_empty:
        console.print(f"• {hidden_note(result.hidden_empty)}", style="dim", markup=False, highlight=False)


@guarded
def compare(
    explainer: o.ExplainerFilter = None,
    dataset: o.DatasetFilter = None,
    protocol: o.ProtocolFilter = None,
    metric: o.Metric = "spearman",
    show_all: o.ShowAll = False,
    against: Annotated[
        str,
        typer.Option(
            "--against",
            help="baseline: each architecture's DCLS weights and trained DCLS variants vs its baseline; parent: each trained model vs the model it was trained from.",
        ),
    ] = "baseline",
    runs: Annotated[
        Optional[tuple[int, int]],
        typer.Option(
            "--runs", help="Compare run B with run A (ids from `alignbench report`), on the images both scored.", show_default=False
        ),
    ] = None,
    db: o.Db = None,
    as_json: o.Json = False,
) -> None:
    """DCLS vs baseline per architecture, with confidence intervals and rankings, from the store.

    For each architecture with a baseline and a DCLS run on the same dataset, explainer and protocol: both scores on the images both runs scored, Δ, a paired bootstrap 95% CI of Δ, the Wilcoxon signed-rank p-value and a verdict, with the centre-bias reference on the same images; then a ranking of all runs. Each trained DCLS model (`alignbench train`) is a row of its own, named by its tag. --against parent compares each trained model with its parent instead, --runs A B any two runs. Reads the store only; exits 1 when nothing can be compared.

    Example: [bold]alignbench compare --explainer threshold-gradcam --dataset clickme-val[/]
    """
    from alignbench.analysis.compare import compare as run_compare
    from alignbench.errors import AlignbenchError

    if runs is not None and (against != "baseline" or explainer or dataset or protocol):
        raise AlignbenchError("--runs A B names the two runs itself; give it without --against, --explainer, --dataset or --protocol")
    result = run_compare(db, o.run_filter(explainer, dataset, protocol, metric, show_all=show_all), against=against, run_pair=runs)
    if as_json:
        typer.echo(json.dumps(result.to_json(), allow_nan=False))
        for group in result.groups:
            for note in _notes(group, result.metric):
                err_console.print(note, markup=False, highlight=False)
    else:
        print_result(result, stdout_console())

"""The HTML report's page model built from the store.

``read_report_data`` reads what the report shows (runs, comparisons, the paper's figures, which images
each gallery shows); ``build_page`` turns it, with the stored thumbnails, into an ``HtmlPage``
(``alignbench.html_report.page``): tables of display strings and sort keys, figures and galleries
painted by ``painter``, and every file the page links to as bytes. Nothing here computes a map or
imports torch: thumbnails are computed beside the scorer (``alignbench.html_report.thumbnails``)
before the page is built.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from alignbench._utils.class_names import class_name
from alignbench.analysis import DEFAULT_BINS, NOTHING_STORED
from alignbench.analysis._queries import Reader, RunDetails, connection_of, image_rows, metric_means, run_details
from alignbench.analysis.compare import ALPHA, CONFIDENCE, CompareResult, compare_runs
from alignbench.analysis.report import Report, build_report
from alignbench.analysis.runs import RunFilter, RunScore, StoredRuns, load_runs, score_label
from alignbench.explainers import CENTRE_BIAS  # torch-free: the registry is plain data
from alignbench.html_report.gallery import (
    DEFAULT_GALLERY,
    DEFAULT_SEED,
    GalleryPlan,
    gallery_view,
    imagenet_classes,
    plan_galleries,
    thumbnails_needed,
)
from alignbench.html_report.page import Cell, HtmlPage, ImageTable, Table, message_page
from alignbench.html_report.painter import Painter, paint_figures
from alignbench.metrics import metric_spec  # torch-free: the registry is plain data
from alignbench.store import listing
from alignbench.store.listing import THUMBNAIL_KINDS

# --- what the report reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReportData:
    """What the report shows, read from the store once."""

    runs: RunFilter
    stored: StoredRuns
    report: Report
    compared: CompareResult | None
    plans: list[GalleryPlan]
    details: dict[int, RunDetails]
    parents: CompareResult | None = None  # each trained model against its parent

    @property
    def empty(self) -> bool:
        return not self.stored.runs


def read_report_data(
    session: Reader,
    runs: RunFilter | None = None,
    *,
    gallery: int = DEFAULT_GALLERY,
    seed: int = DEFAULT_SEED,
    bins: int = DEFAULT_BINS,
) -> ReportData:
    """The runs, comparisons, figure data and gallery choices of the report of ``runs``."""
    runs = RunFilter.of(runs)
    higher_is_better = metric_spec(runs.metric).higher_is_better
    stored = load_runs(session, runs)
    report = build_report(session, runs, bins=bins, stored=stored)
    compared = compare_runs(session, runs, stored=stored) if runs.run_id is None else None
    parents = compare_runs(session, runs, against="parent", stored=stored) if runs.run_id is None else None
    comparisons = (compared.comparisons if compared is not None else []) + (parents.comparisons if parents is not None else [])
    galleried = stored
    if runs.run_id is not None and stored.runs and not stored.runs[0].is_reference:
        # a run's page shows the centre-bias reference beside its maps, as the overview's galleries do
        view = stored.runs[0].view
        references = load_runs(session, RunFilter(explainer=CENTRE_BIAS, dataset=view.dataset, protocol=view.protocol, metric=runs.metric))
        galleried = StoredRuns(stored.metric, stored.runs + references.runs, {**stored.values, **references.values})
    plans = plan_galleries(session, galleried, comparisons, gallery, seed=seed, higher_is_better=higher_is_better, run_id=runs.run_id)
    details = run_details(session, [run.run_id for run in stored.runs])
    return ReportData(runs, stored, report, compared, plans, details, parents if parents is not None and parents.groups else None)


# A run's thumbnails of an image are stored together (alignbench.html_report.thumbnails), the reference map's
# only where the dataset has reference maps: an image with these kinds has all it will ever have.
_COMPLETE_KINDS = tuple(kind for kind in THUMBNAIL_KINDS if kind != "reference")


def missing_thumbnails(session: Reader, data: ReportData) -> dict[int, set[str]]:
    """run id → image ids the galleries show that lack a stored thumbnail of some kind."""
    needed = thumbnails_needed(data.plans)
    have = listing.stored_thumbnails(connection_of(session), list(needed))
    missing = {
        run_id: {i for i in image_ids if any((run_id, i, kind) not in have for kind in _COMPLETE_KINDS)}
        for run_id, image_ids in needed.items()
    }
    return {run_id: ids for run_id, ids in missing.items() if ids}


# --- formatting ----------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 4, signed: bool = False) -> Cell:
    if value is None or not math.isfinite(value):
        return Cell("—", None)
    return Cell(f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}", float(value))


def _count(value: int | None) -> Cell:
    return Cell("—", None) if value is None else Cell(f"{value:,}", float(value))


def _p_value(p: float | None) -> Cell:
    if p is None:
        return Cell("—", None)
    if p == 0.0:
        return Cell("< 1e-300", 0.0)
    return Cell(f"{p:.1e}" if p < 1e-3 else f"{p:.3f}", float(p))


def _variant(run: RunScore, details: RunDetails | None) -> str:
    if run.is_reference:
        return "reference"
    parts = []
    if run.view.dcls:
        recipe = json.loads(run.view.recipe or "{}")
        if {"version", "dilated_kernel_size", "kernel_count"} <= recipe.keys():
            size = recipe["dilated_kernel_size"]
            parts.append(f"DCLS {recipe['version']} {size}×{size}, {recipe['kernel_count']} elements")
        else:
            parts.append("DCLS")
        if details is not None and details.init:
            parts.append(details.init)
    else:
        parts.append("baseline")
    if details is not None and details.origin:
        parts.append(details.origin)
    if details is not None and details.tag:
        parts.append(f"“{details.tag}”")
    return " · ".join(parts)


def _runs_table(data: ReportData, means: dict[str, dict[int, tuple[float | None, int]]]) -> Table:
    metrics = list(means)
    anchors = {run_id: plan.anchor for plan in data.plans for run_id in plan.run_ids}
    columns = (
        "run",
        "model",
        "variant",
        "params",
        "explainer",
        "dataset",
        "protocol",
        "status",
        "images",
        "scored",
        "skipped",
        *(f"mean {m}" for m in metrics),
        "score",
    )
    rows, classes = [], []
    for run in data.stored.runs:
        v, details = run.view, data.details.get(run.run_id)
        mean_cells = []
        for metric in metrics:
            mean = means[metric].get(run.run_id)
            mean_cells.append(_number(mean[0]) if mean is not None and metric in v.metrics.split(",") else Cell("", None))
        anchor = anchors.get(run.run_id)
        rows.append(
            (
                Cell(str(run.run_id), float(run.run_id), link=f"#{anchor}" if anchor else None),
                Cell("centre bias (reference)" if run.is_reference else v.model),
                Cell(_variant(run, details), title=details.weights_source if details else None),
                Cell("" if not v.param_count else f"{v.param_count / 1e6:.1f} M", float(v.param_count or 0)),
                Cell(run.group.explainer_label),
                Cell(v.dataset, title=details.dataset_location if details and details.dataset_location else None),
                Cell(v.protocol),
                Cell(v.status),
                _count(v.n_images),
                _count(run.n_scored),
                _count(run.n_rows - run.n_scored),
                *mean_cells,
                _number(run.score),
            )
        )
        classes.append("reference" if run.is_reference else "")
    caption = (
        "score: the mean divided by the human ceiling where the dataset has one (the alignment score), else the mean · "
        "click a column to sort · a run's id links to its gallery"
    )
    return Table("runs", "Stored runs", columns, tuple(rows), tuple(classes), caption)


# a comparison table's title, side columns and Δ, by its kind (compare's dcls-vs-baseline or against-parent)
_TABLE_KINDS = {
    "dcls-vs-baseline": ("DCLS vs baseline", "baseline", "DCLS", "DCLS − baseline"),
    "against-parent": ("Trained vs parent", "parent", "trained", "trained − parent"),
}


def _comparison_tables(compared: CompareResult, plans: list[GalleryPlan], *, start: int = 0) -> list[Table]:
    galleries = {plan.run_ids: plan.anchor for plan in plans if plan.comparison is not None}
    title, side_a, side_b, delta = _TABLE_KINDS[compared.kind]
    tables = []
    for n, group in enumerate(compared.groups, start=start):
        rows, classes = [], []
        for row in group.rows:
            both = row.baseline_run_id is not None and row.dcls_run_id is not None
            ci = "—" if row.ci_low is None else f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
            anchor = galleries.get((row.baseline_run_id, row.dcls_run_id))
            name = f"{row.model} · {row.variant}" if row.variant else row.model
            rows.append(
                (
                    Cell(name, link=f"#{anchor}" if anchor else None),
                    _number(row.baseline),
                    _number(row.dcls),
                    _number(row.delta, signed=True),
                    Cell(ci, row.ci_low),
                    _p_value(row.p_value),
                    _count(row.n_pairs if both else None),
                    _number(row.centre_bias),
                    Cell(row.verdict),
                    Cell(" · ".join(f"run {r}" for r in (row.baseline_run_id, row.dcls_run_id) if r is not None)),
                )
            )
            classes.append(row.verdict.replace(" ", "-"))
        if group.reference is not None:
            reference = group.reference
            rows.append(
                (
                    Cell("centre bias (model-free reference)"),
                    Cell(""),
                    Cell(""),
                    Cell(""),
                    Cell(""),
                    Cell(""),
                    _count(reference.n_scored),
                    _number(reference.score),
                    Cell(""),
                    Cell(f"run {reference.run_id}"),
                )
            )
            classes.append("reference")
        caption = (
            f"scores: {group.scale}, on the images both runs scored · Δ = {delta} · {CONFIDENCE:.0%} CI: paired "
            f"bootstrap, {compared.n_resamples} resamples · p: Wilcoxon signed-rank · verdict: CI excludes 0 and p < {ALPHA} · "
            "centre bias: the reference on the same images"
        )
        tables.append(
            Table(
                f"comparison-table-{n + 1}",
                f"{title} ({group.scale_name}) · {group.group.label}",
                ("model", side_a, side_b, "Δ", f"{CONFIDENCE:.0%} CI", "p", "pairs", "centre bias", "verdict", "runs"),
                tuple(rows),
                tuple(classes),
                caption,
            )
        )
    return tables


def _details_table(run: RunScore, details: RunDetails | None) -> Table:
    v = run.view
    pairs = [
        ("model", "centre bias (reference)" if run.is_reference else v.model),
        ("variant", _variant(run, details)),
        ("weights", details.weights_source if details else ""),
        ("how it loads", (details.model_request if details else None) or "—"),
        ("weights fingerprint", v.weights_fingerprint),
        ("parameters", f"{v.param_count:,}" if v.param_count else "—"),
        ("explainer", run.group.explainer_label),
        ("dataset", f"{v.dataset} ({details.dataset_location})" if details and details.dataset_location else v.dataset),
        ("dataset fingerprint", v.dataset_fingerprint),
        ("protocol", v.protocol),
        ("metrics", v.metrics),
        ("status", v.status),
        ("images", f"{v.n_images:,} ({run.n_scored:,} scored, {run.n_rows - run.n_scored:,} skipped)"),
        (f"mean {run.metric}", "—" if run.mean is None else f"{run.mean:.4f}"),
        ("score", "—" if run.score is None else f"{run.score:.4f} ({score_label(run.metric, v.ceiling)})"),
    ]
    if details is not None:
        pairs += [
            ("precision", details.precision),
            ("device", details.device or "—"),
            ("compute time", f"{details.compute_seconds:.1f} s"),
            ("last written", str(details.updated_at)),
        ]
    return Table("details", f"Run {run.run_id}", ("", ""), tuple((Cell(k), Cell(str(value))) for k, value in pairs), sortable=False)


def _image_table(session: Reader, run: RunScore, imagenet: bool) -> ImageTable:
    rows = []
    for row in image_rows(session, run.run_id, run.metric):
        rows.append(
            [
                row.image_index,
                row.image_id,
                class_name(row.target, imagenet),
                class_name(row.prediction, imagenet),
                None if row.confidence is None else round(row.confidence, 4),
                None if row.value is None or not math.isfinite(row.value) else round(row.value, 6),
                row.skip_reason or "",
            ]
        )
    return ImageTable(
        ("index", "image", "target", "prediction", "confidence", run.metric, "skipped because"),
        (True, False, False, False, True, True, False),
        rows,
    )


def build_page(
    session: Reader,
    data: ReportData,
    *,
    store: str = "",
    unavailable: dict[int, str] | None = None,
    notes: list[str] | None = None,
) -> HtmlPage:
    """The page of ``data`` (``read_report_data``), with the thumbnails stored for its galleries.
    ``unavailable``: run id → why its maps could not be computed here (shown in its galleries)."""
    unavailable = dict(unavailable or {})
    runs = data.runs
    page = message_page(None, store=store, filters=runs.options() or "none")
    if runs.run_id is not None:
        page.title = f"alignbench report · run {runs.run_id}"
    page.notes = list(notes or [])
    if data.empty:
        options = runs.options()
        page.message = NOTHING_STORED if not options else f"No stored runs match {options}; run `alignbench score MODEL {options}` first."
        return page
    metrics = sorted({m for run in data.stored.runs for m in run.view.metrics.split(",")}, key=lambda m: (m != data.stored.metric, m))
    means = {data.stored.metric: {run.run_id: (run.mean, run.n_scored) for run in data.stored.runs}}
    for metric in metrics[1:]:
        means[metric] = metric_means(session, [run.run_id for run in data.stored.runs if metric in run.view.metrics.split(",")], metric)
    page.runs = _runs_table(data, means)
    for compared in (data.compared, data.parents):
        if compared is not None:
            page.comparisons += _comparison_tables(compared, data.plans, start=len(page.comparisons))
            page.notes += [note for row in compared.comparisons for note in row.notes]
    page.figures = paint_figures(data.report, page.assets)
    painter = Painter(page.assets)
    page.galleries = [gallery_view(session, plan, data.stored, data.details, painter, unavailable) for plan in data.plans]
    if page.galleries:
        page.colour_bar = painter.colour_bar()
    if runs.run_id is not None:
        run = data.stored.runs[0]
        details = data.details.get(run.run_id)
        page.details = _details_table(run, details)
        page.images = _image_table(session, run, imagenet_classes(run, details))
        if run.is_reference:
            page.notes.append(
                "the centre-bias reference has one map for every image; it is shown beside the model maps in every other run's gallery"
            )
    return page

"""The HTML report's page model: plain dataclasses built from the store, laid out by Jinja2 templates.

``read_report_data`` reads what the report shows (runs, comparisons, the paper's figures, which images
each gallery shows); ``build_page`` turns it, with the stored thumbnails, into an ``HtmlPage``: tables
of display strings and sort keys, figures, galleries of pictures, and every file the page links to as
bytes (``assets``); ``render_page`` lays it out with the templates in ``templates/`` (autoescaped).
Nothing here computes a map or imports torch: thumbnails are computed beside the scorer
(``alignbench.html_report.thumbnails``) before the page is built, and the centre-bias map is model-free.

Colours: maps are drawn with the colour map ``explain`` uses for its overlays (jet), as 8-bit PNGs
whose palette is the colour map, and overlaid on the picture by the page itself at the weight
``explain`` blends them with (CSS opacity: the browser blends exactly as ``explain`` does, with no
second file per map). In a gallery row the model maps of every run share one colour scale (from the
lowest to the highest value among them), so a weaker map looks weaker; the human map and the
centre-bias map, in other units, each span their own range.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session

from alignbench import __version__
from alignbench._utils.class_names import class_name
from alignbench.analysis import DEFAULT_BINS
from alignbench.analysis._queries import ImageRow, RunDetails, image_rows, metric_means, run_details
from alignbench.analysis.compare import ALPHA, CONFIDENCE, CompareResult, compare_runs
from alignbench.html_report.gallery import DEFAULT_GALLERY, DEFAULT_SEED, GalleryImage, GalleryPlan, plan_galleries, thumbnails_needed
from alignbench.analysis.report import Report, build_report
from alignbench.analysis.runs import RunFilter, RunScore, StoredRuns, load_runs, score_label
from alignbench.datasets import NO_REFERENCE  # torch-free: a picture stored without its reference map says this
from alignbench.explainers import CENTRE_BIAS
from alignbench.store import queries as q
from alignbench.store.tables import THUMBNAIL_KINDS, Thumbnail

COLOUR_MAP = "jet"  # explain's overlays (alignbench.explainers._files)
PICTURES = "images/"  # where the pictures go, each named by a hash of its bytes (so a rewrite can skip it)
OVERLAY_ALPHA = 0.5  # the map's weight in an overlay, as in explain's (the templates' CSS opacity)
# Datasets whose labels are ImageNet-1k class indices (SPEC "Datasets"), so targets have ImageNet names.
IMAGENET_LABELLED = frozenset({"sample", "clickme-val", "imagenet-val"})
NOTHING_STORED = "No runs stored yet: run `alignbench score` first (it scores the embedded default model in seconds), then this report again."
FIGURE_CAPTIONS = {
    "fig2_dcls_vs_baseline.png": "Fig. 2 — DCLS against baseline per architecture; above the line y = x, DCLS scores higher.",
    "fig3_explainers.png": "Fig. 3 — each architecture's score per explainer, with and without DCLS.",
    "fig4_parameters.png": "Fig. 4 — the baselines' parameter count against their score, with Pearson's r and Spearman's ρ.",
    "histograms.png": "The per-image values of each run.",
}


# --- the page model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    text: str
    sort: float | str | None = None  # what the column sorts on (numbers numerically); None: the text
    title: str | None = None  # hover text
    link: str | None = None  # an anchor or page this cell links to


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    row_classes: tuple[str, ...] = ()  # one per row: "reference" marks the centre-bias run
    caption: str = ""
    sortable: bool = True


@dataclass(frozen=True)
class Figure:
    src: str
    caption: str


@dataclass(frozen=True)
class Picture:
    """One picture of a gallery row; ``source``: the stored thumbnail it was drawn from (None: drawn here)."""

    src: str | None  # path inside the report; None: not available (``alt`` says why)
    alt: str
    source: tuple[int, str, str] | None = None  # (run id, image id, kind)


@dataclass(frozen=True)
class MapView:
    """One map of a gallery row (the page shows it over the row's picture and on its own)."""

    label: str  # human map, baseline, DCLS, centre bias
    kind: str  # human | model | centre-bias (CSS class)
    plain: Picture
    score: str  # the image's metric value for this map, e.g. "ρ = +0.512"
    note: str = ""  # the prediction of the model this map explains


@dataclass(frozen=True)
class GalleryRow:
    image_id: str
    image_index: int
    target: str
    picture: Picture
    maps: tuple[MapView, ...]
    delta: str = ""  # second − first run, for a comparison
    scale: str = ""  # the model maps' shared colour scale


@dataclass(frozen=True)
class GallerySection:
    title: str
    rows: tuple[GalleryRow, ...]


@dataclass(frozen=True)
class Gallery:
    anchor: str
    title: str
    columns: tuple[str, ...]  # picture, human, each run's label, centre bias
    sections: tuple[GallerySection, ...]
    missing: tuple[str, ...] = ()  # why some maps are not shown
    reference: str = ""  # what the reference map of this dataset is

    @property
    def has_pictures(self) -> bool:
        """Whether any image or model map is shown (else the template lists the images and scores only)."""
        return any(row.picture.src for section in self.sections for row in section.rows)


@dataclass(frozen=True)
class ImageTable:
    """A run's every stored image, laid out client-side (filtered, sorted and paged by the inline script)."""

    columns: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: list[list[Any]]


@dataclass
class HtmlPage:
    title: str
    generated: str
    version: str
    store: str
    filters: str
    message: str | None = None  # why there is nothing to show (empty store)
    runs: Table | None = None
    details: Table | None = None  # the --run page: what the run is
    comparisons: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)
    images: ImageTable | None = None
    notes: list[str] = field(default_factory=list)
    colour_bar: str | None = None
    assets: dict[str, bytes] = field(default_factory=dict)  # path inside the report → bytes

    @property
    def template(self) -> str:
        return "run.html.j2" if self.details is not None else "index.html.j2"


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

    @property
    def empty(self) -> bool:
        return not self.stored.runs


def read_report_data(
    session: Session, runs: RunFilter | None = None, *, gallery: int = DEFAULT_GALLERY, seed: int = DEFAULT_SEED, bins: int = DEFAULT_BINS,
) -> ReportData:
    """The runs, comparisons, figure data and gallery choices of the report of ``runs``."""
    from alignbench.metrics import metric_spec  # the registry is plain data (torch-free)

    runs = RunFilter.of(runs)
    higher_is_better = metric_spec(runs.metric).higher_is_better
    stored = load_runs(session, runs)
    report = build_report(session, runs, bins=bins, stored=stored)
    compared = compare_runs(session, runs, stored=stored) if runs.run_id is None else None
    comparisons = compared.comparisons if compared is not None else []
    galleried = stored
    if runs.run_id is not None and stored.runs and not stored.runs[0].is_reference:
        # a run's page shows the centre-bias reference beside its maps, as the overview's galleries do
        view = stored.runs[0].view
        references = load_runs(session, RunFilter(explainer=CENTRE_BIAS, dataset=view.dataset, protocol=view.protocol, metric=runs.metric))
        galleried = StoredRuns(stored.metric, stored.runs + references.runs, {**stored.values, **references.values})
    plans = plan_galleries(session, galleried, comparisons, gallery, seed=seed, higher_is_better=higher_is_better, run_id=runs.run_id)
    details = run_details(session, [run.run_id for run in stored.runs])
    return ReportData(runs, stored, report, compared, plans, details)


# A run's thumbnails of an image are stored together (alignbench.html_report.thumbnails), the reference map's
# only where the dataset has reference maps: an image with these kinds has all it will ever have.
_COMPLETE_KINDS = tuple(kind for kind in THUMBNAIL_KINDS if kind != "reference")


def missing_thumbnails(session: Session, data: ReportData) -> dict[int, set[str]]:
    """run id → image ids the galleries show that lack a stored thumbnail of some kind."""
    needed = thumbnails_needed(data.plans)
    have = q.stored_thumbnails(session, list(needed))
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


def _imagenet_classes(run: RunScore, details: RunDetails | None) -> bool:
    """Whether a run's class indices are ImageNet-1k's: its dataset's labels are, or its model is a
    registry model (every one an ImageNet-1k classifier) not trained further by alignbench."""
    from alignbench.models.specs import MODELS

    return run.view.dataset in IMAGENET_LABELLED or (run.view.model in MODELS and (details is None or not details.origin))


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
    columns = ("run", "model", "variant", "params", "explainer", "dataset", "protocol", "status", "images", "scored", "skipped",
               *(f"mean {m}" for m in metrics), "score")
    rows, classes = [], []
    for run in data.stored.runs:
        v, details = run.view, data.details.get(run.run_id)
        mean_cells = []
        for metric in metrics:
            mean = means[metric].get(run.run_id)
            mean_cells.append(_number(mean[0]) if mean is not None and metric in v.metrics.split(",") else Cell("", None))
        anchor = anchors.get(run.run_id)
        rows.append((
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
        ))
        classes.append("reference" if run.is_reference else "")
    caption = (
        "score: the mean divided by the human ceiling where the dataset has one (the alignment score), else the mean · "
        "click a column to sort · a run's id links to its gallery"
    )
    return Table("runs", "Stored runs", columns, tuple(rows), tuple(classes), caption)


def _comparison_tables(compared: CompareResult, plans: list[GalleryPlan]) -> list[Table]:
    galleries = {plan.run_ids: plan.anchor for plan in plans if plan.comparison is not None}
    tables = []
    for n, group in enumerate(compared.groups):
        rows, classes = [], []
        for row in group.rows:
            both = row.baseline_run_id is not None and row.dcls_run_id is not None
            ci = "—" if row.ci_low is None else f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
            anchor = galleries.get((row.baseline_run_id, row.dcls_run_id))
            rows.append((
                Cell(row.model, link=f"#{anchor}" if anchor else None), _number(row.baseline), _number(row.dcls), _number(row.delta, signed=True),
                Cell(ci, row.ci_low), _p_value(row.p_value), _count(row.n_pairs if both else None), _number(row.centre_bias),
                Cell(row.verdict), Cell(" · ".join(f"run {r}" for r in (row.baseline_run_id, row.dcls_run_id) if r is not None)),
            ))
            classes.append(row.verdict.replace(" ", "-"))
        if group.reference is not None:
            reference = group.reference
            rows.append((
                Cell("centre bias (model-free reference)"), Cell(""), Cell(""), Cell(""), Cell(""), Cell(""),
                _count(reference.n_scored), _number(reference.score), Cell(""), Cell(f"run {reference.run_id}"),
            ))
            classes.append("reference")
        caption = (
            f"scores: {group.scale}, on the images both runs scored · Δ = DCLS − baseline · {CONFIDENCE:.0%} CI: paired "
            f"bootstrap, {compared.n_resamples} resamples · p: Wilcoxon signed-rank · verdict: CI excludes 0 and p < {ALPHA} · "
            "centre bias: the reference on the same images"
        )
        tables.append(Table(
            f"comparison-table-{n + 1}", f"DCLS vs baseline ({group.scale_name}) · {group.group.label}",
            ("model", "baseline", "DCLS", "Δ", f"{CONFIDENCE:.0%} CI", "p", "pairs", "centre bias", "verdict", "runs"),
            tuple(rows), tuple(classes), caption,
        ))
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
        pairs += [("precision", details.precision), ("device", details.device or "—"), ("compute time", f"{details.compute_seconds:.1f} s"),
                  ("last written", str(details.updated_at))]
    return Table("details", f"Run {run.run_id}", ("", ""), tuple((Cell(k), Cell(str(value))) for k, value in pairs), sortable=False)


def _image_table(session: Session, run: RunScore, imagenet: bool) -> ImageTable:
    rows = []
    for row in image_rows(session, run.run_id, run.metric):
        rows.append([
            row.image_index, row.image_id, class_name(row.target, imagenet), class_name(row.prediction, imagenet),
            None if row.confidence is None else round(row.confidence, 4),
            None if row.value is None or not math.isfinite(row.value) else round(row.value, 6), row.skip_reason or "",
        ])
    return ImageTable(
        ("index", "image", "target", "prediction", "confidence", run.metric, "skipped because"),
        (True, False, False, False, True, True, False),
        rows,
    )


# --- pictures ------------------------------------------------------------------------------------


class _Painter:
    """Turns stored thumbnails into the report's pictures: maps as palette PNGs, each file once."""

    def __init__(self, assets: dict[str, bytes]) -> None:
        from matplotlib import colormaps

        self.assets = assets
        lut = np.rint(colormaps[COLOUR_MAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
        self.palette = lut.ravel().tolist()

    def add(self, png: bytes) -> str:
        name = f"{PICTURES}{hashlib.sha1(png).hexdigest()[:20]}.png"
        self.assets.setdefault(name, png)
        return name

    @staticmethod
    def decode(png: bytes) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(png)) as image:
            return np.asarray(image)

    @staticmethod
    def size(png: bytes) -> tuple[int, int]:
        """(height, width) from the PNG's header, without decoding it."""
        from PIL import Image

        with Image.open(io.BytesIO(png)) as image:
            return image.height, image.width

    def colour(self, unit: np.ndarray) -> str:
        """A map scaled to [0, 1] as a PNG of palette indices 0-255 (a third of an RGB PNG to encode)."""
        from PIL import Image

        image = Image.fromarray(np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L").convert("P")
        image.putpalette(self.palette)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)  # maps are smooth: level 1 is as small, and faster
        return self.add(buffer.getvalue())

    def colour_bar(self) -> str:
        return self.colour(np.repeat(np.linspace(0.0, 1.0, 256)[None], 12, axis=0))


def _values(thumbnail: Thumbnail) -> np.ndarray:
    """The map's values back from its 8-bit thumbnail (0..255 spans [vmin, vmax])."""
    grey = _Painter.decode(thumbnail.png).astype(np.float64) / 255.0
    low, high = thumbnail.vmin or 0.0, thumbnail.vmax or 0.0
    return low + grey * (high - low)


def _unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _reference_names(dataset: str) -> tuple[str, str]:
    """(column name, what it is) of a dataset's reference maps: only ClickMe's are human attention."""
    from alignbench.datasets import DATASETS  # the registry is plain data (torch-free)

    spec = DATASETS.get(dataset)
    what = spec.reference if spec is not None else "the dataset's reference map"
    return ("human map" if dataset == "clickme-val" else "reference map"), what


def _score_text(metric: str, row: ImageRow | None) -> str:
    symbol = "ρ" if metric == "spearman" else metric
    if row is None:
        return "not scored"
    return f"{symbol} = {row.value:+.3f}" if row.value is not None else f"skipped: {row.skip_reason or 'undefined'}"


def _missing(kind: str, why: str) -> Picture:
    return Picture(None, f"{kind} not available: {why}")


def _gallery(
    session: Session, plan: GalleryPlan, data: ReportData, painter: _Painter, unavailable: dict[int, str],
) -> Gallery:
    from alignbench.explainers import CENTRE_BIAS_SIGMA_FRAC, centre_bias_map  # numpy only

    metric = data.stored.metric
    runs = {run.run_id: run for run in data.stored.runs}
    thumbnails = {
        run_id: q.read_thumbnails(session, run_id, [image.rows[run_id].image_id for image in plan.images if run_id in image.rows])
        for run_id in plan.run_ids
    }
    imagenet = {run_id: _imagenet_classes(runs[run_id], data.details.get(run_id)) for run_id in plan.run_ids}
    reference_name, reference_what = _reference_names(runs[plan.run_ids[0]].view.dataset)
    stored_kinds = {kind for stored in thumbnails.values() for _, kind in stored}
    if "image" in stored_kinds and "reference" not in stored_kinds:
        reference_what = NO_REFERENCE
    missing = [f"run {run_id} ({runs[run_id].display_name}): {why}" for run_id, why in unavailable.items() if run_id in plan.run_ids]
    no_thumbnail = "see above" if missing else "not computed"
    centre_maps: dict[tuple[int, int], str] = {}  # one file per picture size

    def gallery_row(image: GalleryImage) -> GalleryRow:
        image_id = image.image_id()
        first = plan.run_ids[0]
        # the picture and the reference map are the same for every run of the gallery: the first that has them
        found = {kind: next((t[(image_id, kind)] for t in thumbnails.values() if (image_id, kind) in t), None) for kind in ("image", "reference")}
        picture, reference = found["image"], found["reference"]
        size = _Painter.size(picture.png) if picture is not None else None
        picture_view = (
            Picture(painter.add(picture.png), f"image {image_id}", (picture.run_id, image_id, "image"))
            if picture is not None else _missing("image", no_thumbnail)
        )
        maps = []
        no_reference = picture is not None and reference is None
        if reference is not None:
            # stored over its own range: its grey levels are already the colour indices
            plain = painter.colour(_Painter.decode(reference.png) / 255.0)
            maps.append(MapView(reference_name, "human", Picture(plain, f"{reference_name} of {image_id}", (reference.run_id, image_id, "reference")), ""))
        else:
            maps.append(MapView(reference_name, "human", _missing(reference_name, NO_REFERENCE if no_reference else no_thumbnail), ""))
        model_thumbs = {run_id: thumbnails[run_id].get((image_id, "model")) for run_id in plan.run_ids}
        present = [t for t in model_thumbs.values() if t is not None]
        low = min((t.vmin or 0.0 for t in present), default=0.0)
        high = max((t.vmax or 0.0 for t in present), default=0.0)
        for run_id, label in zip(plan.run_ids, plan.labels):
            row = image.rows.get(run_id)
            thumb = model_thumbs[run_id]
            note = ""
            if row is not None and row.prediction is not None:
                confidence = f" ({row.confidence:.0%})" if row.confidence is not None else ""
                note = f"predicts {class_name(row.prediction, imagenet[run_id])}{confidence}"
            if thumb is None:
                maps.append(MapView(label, "model", _missing(f"{label} map", unavailable.get(run_id, no_thumbnail)), _score_text(metric, row), note))
                continue
            plain = painter.colour(_unit(_values(thumb), low, high))
            maps.append(MapView(label, "model", Picture(plain, f"{label} map of {image_id}", (run_id, image_id, "model")), _score_text(metric, row), note))
        if no_reference:  # the centre-bias map is a reference for reference maps: nothing to set it beside
            maps.append(MapView("centre bias", "centre-bias", _missing("centre-bias map", NO_REFERENCE), ""))
        elif size is not None:
            if size not in centre_maps:
                unit = centre_bias_map(size[0], size[1], plan.reference_sigma_frac or CENTRE_BIAS_SIGMA_FRAC).astype(np.float64)
                centre_maps[size] = painter.colour(_unit(unit, float(unit.min()), float(unit.max())))
            reference_row = image.rows.get(plan.reference_run_id) if plan.reference_run_id is not None else None
            maps.append(MapView("centre bias", "centre-bias", Picture(centre_maps[size], "centre-bias map"),
                                _score_text(metric, reference_row) if reference_row else ""))
        else:
            maps.append(MapView("centre bias", "centre-bias", _missing("centre-bias map", "its size is the picture's"), ""))
        target_row = image.rows.get(first) or next(iter(image.rows.values()))
        delta = ""
        if len(plan.run_ids) == 2:
            a, b = image.rows.get(plan.run_ids[0]), image.rows.get(plan.run_ids[1])
            if a is not None and b is not None and a.value is not None and b.value is not None:
                delta = f"Δ = {b.value - a.value:+.3f} ({plan.labels[1]} − {plan.labels[0]})"
        return GalleryRow(
            image_id, image.index, class_name(target_row.target, imagenet[first]) if target_row.target is not None else "—",
            picture_view, tuple(maps), delta, f"model maps: {low:.3g} to {high:.3g}" if present else "",
        )

    sections = tuple(GallerySection(section.title, tuple(gallery_row(image) for image in section.images)) for section in plan.sections)
    columns = ("image", reference_name, *plan.labels, "centre bias")
    return Gallery(plan.anchor, plan.title, columns, sections, tuple(missing), f"{reference_name}: {reference_what}")


# --- figures -------------------------------------------------------------------------------------


def _figures(report: Report, assets: dict[str, bytes]) -> list[Figure]:
    """The paper's figures and the histograms, drawn by ``plots.write_pngs`` (the same figures as ``report --png``)."""
    from alignbench.analysis.plots import write_pngs

    figures = []
    with tempfile.TemporaryDirectory() as directory:
        for path in write_pngs(report, directory):
            name = f"figures/{path.name}"
            assets[name] = path.read_bytes()
            figures.append(Figure(name, FIGURE_CAPTIONS.get(path.name, "")))
    return figures


# --- the page ------------------------------------------------------------------------------------


def message_page(message: str | None, *, store: str = "", filters: str = "none") -> HtmlPage:
    """A page with nothing but ``message`` (an empty or missing store)."""
    return HtmlPage("alignbench report", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), __version__, store, filters, message=message)


def build_page(
    session: Session,
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
    if data.compared is not None:
        page.comparisons = _comparison_tables(data.compared, data.plans)
        page.notes += [note for row in data.compared.comparisons for note in row.notes]
    page.figures = _figures(data.report, page.assets)
    painter = _Painter(page.assets)
    page.galleries = [_gallery(session, plan, data, painter, unavailable) for plan in data.plans]
    if page.galleries:
        page.colour_bar = painter.colour_bar()
    if runs.run_id is not None:
        run = data.stored.runs[0]
        details = data.details.get(run.run_id)
        page.details = _details_table(run, details)
        page.images = _image_table(session, run, _imagenet_classes(run, details))
        if run.is_reference:
            page.notes.append("the centre-bias reference has one map for every image; it is shown beside the model maps in every other run's gallery")
    return page


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("alignbench.html_report", "templates"),
        autoescape=True,  # every value is escaped; the templates hold the only markup
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(page: HtmlPage) -> str:
    """The page's HTML (one file; its pictures and figures are ``page.assets``)."""
    return _environment().get_template(page.template).render(page=page, overlay_alpha=OVERLAY_ALPHA)

"""The HTML report's galleries (the paper's Fig. 1): which images they show, chosen from the stored
scores, and their rows of pictures, painted from the stored thumbnails.

A gallery belongs to a comparison (two runs of one group: baseline and DCLS, labelled so, a trained
DCLS variant labelled with its tag, or a trained model and its parent, labelled parent / trained with
the tag) or to one run. It shows K images in each of three sections: for a run, its best and
worst scored images and K random others; for a comparison, the images where the second run beats the
first by most, where the first beats the second by most (Δ = second − first, per image, on the images
both scored) and K random others. An image appears in one section only, and the random draw is
seeded, so the same store gives the same galleries and their stored thumbnails are reused.

Each image of a gallery needs three thumbnails per run: the model input (``image``), the reference
map (``reference``) and the run's explanation (``model``) (``THUMBNAIL_KINDS`` of the store). They are
computed beside the scorer (``alignbench.html_report.thumbnails``, which imports torch) before the
page is built; nothing here computes a map (the centre-bias map is model-free, numpy only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from alignbench._utils.class_names import class_name
from alignbench.analysis._queries import ImageRow, ImageValues, Reader, RunDetails, connection_of, image_rows
from alignbench.analysis.compare import Comparison
from alignbench.analysis.runs import RunScore, StoredRuns
from alignbench.datasets import DATASETS, NO_REFERENCE  # torch-free: the registry is plain data
from alignbench.explainers import CENTRE_BIAS_SIGMA_FRAC, centre_bias_map  # torch-free: numpy only
from alignbench.html_report.page import Gallery, GalleryRow, MapView, Picture
from alignbench.html_report.page import GallerySection as SectionView
from alignbench.html_report.painter import Painter, unit_range
from alignbench.models.specs import MODELS
from alignbench.store.listing import ThumbnailRow, read_thumbnails

DEFAULT_GALLERY = 8  # images per section (--gallery)
DEFAULT_SEED = 0
# Datasets whose labels are ImageNet-1k class indices (SPEC "Datasets"), so targets have ImageNet names.
IMAGENET_LABELLED = frozenset({"sample", "clickme-val", "imagenet-val"})


@dataclass(frozen=True)
class Picks:
    """Image indices of a gallery's three sections (disjoint)."""

    best: tuple[int, ...]
    worst: tuple[int, ...]
    random: tuple[int, ...]

    @property
    def all(self) -> tuple[int, ...]:
        return self.best + self.worst + self.random


def pick_images(index: np.ndarray, value: np.ndarray, k: int, *, seed: int = DEFAULT_SEED, higher_is_better: bool = True) -> Picks:
    """The ``k`` best and ``k`` worst images by ``value`` (ties: lower index first) and ``k`` random
    others (seeded, in index order); fewer where there are not enough images."""
    index = np.asarray(index, dtype=np.int64)
    value = np.asarray(value, dtype=np.float64)
    if k < 1 or not index.size:
        return Picks((), (), ())
    sign = -1.0 if higher_is_better else 1.0
    order = np.lexsort((index, sign * value))  # best first
    best, rest = order[:k], order[k:]
    worst = _first(rest, -sign * value[rest], index[rest], k)
    keep = np.ones(index.size, dtype=bool)
    keep[worst] = False
    remaining = rest[keep[rest]]  # in rank order: the seeded draw is made from it as it always was
    chosen = np.random.default_rng(seed).choice(remaining, size=min(k, remaining.size), replace=False) if remaining.size else remaining
    return Picks(
        tuple(int(i) for i in index[best]),
        tuple(int(i) for i in index[worst]),
        tuple(sorted(int(i) for i in index[chosen])),
    )


def _first(positions: np.ndarray, keys: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` positions with the smallest (key, index), in that order: what sorting them all by
    ``np.lexsort((index, keys))`` and taking ``k`` gives (NaN keys last), sorting only the candidates
    at or below the k-th smallest key (a gallery picks 8 of 52,000 images)."""
    if k >= keys.size:
        return positions[np.lexsort((index, keys))][:k]
    kth = np.partition(keys, k - 1)[k - 1]
    if np.isnan(kth):  # fewer than k numbers: the NaNs come into it
        return positions[np.lexsort((index, keys))][:k]
    candidates = np.flatnonzero(keys <= kth)
    return positions[candidates[np.lexsort((index[candidates], keys[candidates]))]][:k]


@dataclass(frozen=True)
class GalleryImage:
    index: int
    rows: dict[int, ImageRow]  # run id → its stored row for this image (every variant, and the reference run if it has one)

    def image_id(self) -> str:
        return next(iter(self.rows.values())).image_id


@dataclass(frozen=True)
class GallerySection:
    title: str
    images: tuple[GalleryImage, ...]


@dataclass(frozen=True)
class GalleryPlan:
    """One gallery: its runs (left to right), the centre-bias run beside them, and the images chosen."""

    anchor: str  # HTML id, e.g. "comparison-1-5" or "run-3"
    title: str
    run_ids: tuple[int, ...]
    labels: tuple[str, ...]  # one per run: "baseline", "DCLS", ...
    reference_run_id: int | None
    reference_sigma_frac: float | None
    sections: tuple[GallerySection, ...]
    comparison: Comparison | None = None

    @property
    def images(self) -> list[GalleryImage]:
        return [image for section in self.sections for image in section.images]


def _common(first: ImageValues, second: ImageValues) -> tuple[np.ndarray, np.ndarray]:
    """(image indices both scored, second − first on them)."""
    common, mine, theirs = np.intersect1d(first.index, second.index, assume_unique=True, return_indices=True)
    return common, second.value[theirs] - first.value[mine]


def _rows(session: Reader, metric: str, run_ids: list[int], indices: tuple[int, ...]) -> dict[int, dict[int, ImageRow]]:
    """image index → run id → row, for these runs at these images (all runs of one dataset)."""
    out: dict[int, dict[int, ImageRow]] = {i: {} for i in indices}
    first = image_rows(session, run_ids[0], metric, indices)  # the images were picked from this run's scores
    ids = [row.image_id for row in first]
    for run_id, rows in zip(run_ids, [first] + [image_rows(session, r, metric, image_ids=ids) for r in run_ids[1:]]):
        for row in rows:
            out[row.image_index][run_id] = row
    return out


def _sections(session: Reader, metric: str, run_ids: list[int], picks: Picks, titles: tuple[str, str, str]) -> tuple[GallerySection, ...]:
    rows = _rows(session, metric, run_ids, picks.all)
    return tuple(
        GallerySection(title, tuple(GalleryImage(i, rows[i]) for i in chosen if rows[i]))
        for title, chosen in zip(titles, (picks.best, picks.worst, picks.random))
        if chosen
    )


def _sigma(run: RunScore | None) -> float | None:
    if run is None:
        return None
    return json.loads(run.view.params or "{}").get("sigma_frac")


def run_gallery(
    session: Reader, stored: StoredRuns, run: RunScore, reference: RunScore | None, k: int, *, seed: int, higher_is_better: bool
) -> GalleryPlan:
    """A run's K best, K worst and K random scored images."""
    values = stored.values[run.run_id]
    picks = pick_images(values.index, values.value, k, seed=seed, higher_is_better=higher_is_better)
    metric = stored.metric
    run_ids = [run.run_id] + ([reference.run_id] if reference is not None else [])
    sections = _sections(
        session,
        metric,
        run_ids,
        picks,
        (
            f"best {metric}",
            f"worst {metric}",
            f"random (seed {seed})",
        ),
    )
    return GalleryPlan(
        f"run-{run.run_id}",
        f"run {run.run_id}: {run.display_name} · {run.group.label}",
        (run.run_id,),
        (_label(run),),
        reference.run_id if reference is not None else None,
        _sigma(reference),
        sections,
    )


def comparison_gallery(
    session: Reader,
    stored: StoredRuns,
    comparison: Comparison,
    runs: dict[int, RunScore],
    reference: RunScore | None,
    k: int,
    *,
    seed: int,
    higher_is_better: bool,
) -> GalleryPlan:
    """A comparison's images by Δ = second − first run (where the second beats the first by most, and
    the reverse), and K random others, among the images both runs scored."""
    first, second = runs[comparison.baseline_run_id], runs[comparison.dcls_run_id]
    common, delta = _common(stored.values[first.run_id], stored.values[second.run_id])
    picks = pick_images(common, delta, k, seed=seed, higher_is_better=higher_is_better)
    left, right = _side_labels(comparison, first, second)
    run_ids = [first.run_id, second.run_id] + ([reference.run_id] if reference is not None else [])
    sections = _sections(
        session,
        stored.metric,
        run_ids,
        picks,
        (
            f"{right} beats {left} by most",
            f"{left} beats {right} by most",
            f"random (seed {seed})",
        ),
    )
    title = f"{comparison.model}: {left} vs {right} · {first.group.label}"
    return GalleryPlan(
        f"comparison-{first.run_id}-{second.run_id}",
        title,
        (first.run_id, second.run_id),
        (left, right),
        reference.run_id if reference is not None else None,
        _sigma(reference),
        sections,
        comparison,
    )


def _label(run: RunScore) -> str:
    return "DCLS" if run.view.dcls else "baseline"


def _side_labels(comparison: Comparison, first: RunScore, second: RunScore) -> tuple[str, str]:
    """What the two maps of a comparison's gallery are called: baseline / DCLS (a trained DCLS variant
    with its tag), parent / trained (with their tags)."""
    if comparison.kind == "against-parent":
        parent = f"parent · {first.variant}" if first.trained else "parent"
        return parent, f"trained · {comparison.variant or second.variant}"
    if comparison.kind == "dcls-vs-baseline" and comparison.variant:
        return _label(first), f"{_label(second)} · {comparison.variant}"
    if comparison.kind == "runs":
        return f"run {first.run_id}", f"run {second.run_id}"
    return _label(first), _label(second)


def plan_galleries(
    session: Reader,
    stored: StoredRuns,
    comparisons: list[Comparison],
    k: int = DEFAULT_GALLERY,
    *,
    seed: int = DEFAULT_SEED,
    higher_is_better: bool = True,
    run_id: int | None = None,
) -> list[GalleryPlan]:
    """The galleries of a report: one per comparison with both runs, one per model run in none;
    with ``run_id``, that run's gallery alone (the centre-bias run has none: its map is the same for
    every image and shows in every other gallery)."""
    if k < 1:
        return []
    runs = {run.run_id: run for run in stored.runs}
    references: dict[tuple[str, str], list[RunScore]] = {}
    for run in stored.runs:
        if run.is_reference:
            references.setdefault((run.view.dataset_fingerprint, run.view.protocol), []).append(run)

    def reference_of(run: RunScore) -> RunScore | None:
        # as compare pairs them: the centre-bias run of the dataset and protocol with most images scored
        candidates = references.get((run.view.dataset_fingerprint, run.view.protocol))
        return max(candidates, key=lambda r: (r.n_scored, r.run_id)) if candidates else None

    if run_id is not None:
        run = runs.get(run_id)
        if run is None or run.is_reference:
            return []
        return [run_gallery(session, stored, run, reference_of(run), k, seed=seed, higher_is_better=higher_is_better)]
    plans = []
    compared: set[int] = set()
    for comparison in comparisons:
        if comparison.baseline_run_id is None or comparison.dcls_run_id is None or not comparison.n_pairs:
            continue
        if {comparison.baseline_run_id, comparison.dcls_run_id} <= compared and any(
            plan.run_ids == (comparison.baseline_run_id, comparison.dcls_run_id) for plan in plans
        ):
            continue  # a trained model whose parent is the architecture's baseline: one gallery
        reference = runs.get(comparison.centre_bias_run_id) if comparison.centre_bias_run_id is not None else None
        plans.append(comparison_gallery(session, stored, comparison, runs, reference, k, seed=seed, higher_is_better=higher_is_better))
        compared.update((comparison.baseline_run_id, comparison.dcls_run_id))
    for run in stored.runs:
        if not run.is_reference and run.run_id not in compared and run.n_scored:
            plans.append(run_gallery(session, stored, run, reference_of(run), k, seed=seed, higher_is_better=higher_is_better))
    return plans


def thumbnails_needed(plans: list[GalleryPlan]) -> dict[int, set[str]]:
    """run id → the image ids whose thumbnails (every kind of ``THUMBNAIL_KINDS``) its galleries show."""
    needed: dict[int, set[str]] = {}
    for plan in plans:
        for image in plan.images:
            for run_id in plan.run_ids:
                row = image.rows.get(run_id)
                if row is not None:
                    needed.setdefault(run_id, set()).add(row.image_id)
    return needed


# --- the rows of pictures ----------------------------------------------------------------------


def imagenet_classes(run: RunScore, details: RunDetails | None) -> bool:
    """Whether a run's class indices are ImageNet-1k's: its dataset's labels are, or its model is a
    registry model (every one an ImageNet-1k classifier) not trained further by alignbench."""
    return run.view.dataset in IMAGENET_LABELLED or (run.view.model in MODELS and (details is None or not details.origin))


def _reference_names(dataset: str) -> tuple[str, str]:
    """(column name, what it is) of a dataset's reference maps: only ClickMe's are human attention."""
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


def _delta(plan: GalleryPlan, image: GalleryImage) -> str:
    """Δ = second − first run on this image, for a comparison's gallery."""
    if len(plan.run_ids) != 2:
        return ""
    a, b = image.rows.get(plan.run_ids[0]), image.rows.get(plan.run_ids[1])
    if a is None or b is None or a.value is None or b.value is None:
        return ""
    return f"Δ = {b.value - a.value:+.3f} ({plan.labels[1]} − {plan.labels[0]})"


class _GalleryRows:
    """Paints the rows of one gallery from its runs' stored thumbnails."""

    def __init__(
        self,
        session: Reader,
        plan: GalleryPlan,
        stored: StoredRuns,
        details: dict[int, RunDetails],
        painter: Painter,
        unavailable: dict[int, str],
    ) -> None:
        self.plan, self.painter, self.unavailable, self.metric = plan, painter, unavailable, stored.metric
        runs = {run.run_id: run for run in stored.runs}
        self.thumbnails: dict[int, dict[tuple[str, str], ThumbnailRow]] = {
            run_id: read_thumbnails(
                connection_of(session), run_id, [image.rows[run_id].image_id for image in plan.images if run_id in image.rows]
            )
            for run_id in plan.run_ids
        }
        self.imagenet = {run_id: imagenet_classes(runs[run_id], details.get(run_id)) for run_id in plan.run_ids}
        self.reference_name, self.reference_what = _reference_names(runs[plan.run_ids[0]].view.dataset)
        stored_kinds = {kind for thumbnails in self.thumbnails.values() for _, kind in thumbnails}
        if "image" in stored_kinds and "reference" not in stored_kinds:
            self.reference_what = NO_REFERENCE
        self.missing = [
            f"run {run_id} ({runs[run_id].display_name}): {why}" for run_id, why in unavailable.items() if run_id in plan.run_ids
        ]
        self.no_thumbnail = "see above" if self.missing else "not computed"
        self.centre_maps: dict[tuple[int, int], str] = {}  # one file per picture size

    def row(self, image: GalleryImage) -> GalleryRow:
        image_id = image.image_id()
        # the picture and the reference map are the same for every run of the gallery: the first that has them
        picture, reference = (
            next((t[(image_id, kind)] for t in self.thumbnails.values() if (image_id, kind) in t), None) for kind in ("image", "reference")
        )
        picture_view = (
            Picture(self.painter.add(picture.png), f"image {image_id}", (picture.run_id, image_id, "image"))
            if picture is not None
            else _missing("image", self.no_thumbnail)
        )
        no_reference = picture is not None and reference is None
        reference_map = self._reference_map(image_id, reference, no_reference)
        model_maps, scale = self._model_maps(image, image_id)
        centre_bias = self._centre_bias_map(image, picture, no_reference)
        first = self.plan.run_ids[0]
        target_row = image.rows.get(first) or next(iter(image.rows.values()))
        target = class_name(target_row.target, self.imagenet[first]) if target_row.target is not None else "—"
        return GalleryRow(
            image_id, image.index, target, picture_view, (reference_map, *model_maps, centre_bias), _delta(self.plan, image), scale
        )

    def _reference_map(self, image_id: str, reference: ThumbnailRow | None, no_reference: bool) -> MapView:
        name = self.reference_name
        if reference is None:
            return MapView(name, "human", _missing(name, NO_REFERENCE if no_reference else self.no_thumbnail), "")
        # stored over its own range: its grey levels are already the colour indices
        plain = self.painter.colour_thumbnail(reference.png, 0.0, 1.0, 0.0, 1.0)
        return MapView(name, "human", Picture(plain, f"{name} of {image_id}", (reference.run_id, image_id, "reference")), "")

    def _model_maps(self, image: GalleryImage, image_id: str) -> tuple[list[MapView], str]:
        """Every run's map on the runs' shared colour scale, and that scale."""
        thumbs = {run_id: self.thumbnails[run_id].get((image_id, "model")) for run_id in self.plan.run_ids}
        present = [t for t in thumbs.values() if t is not None]
        low = min((t.vmin or 0.0 for t in present), default=0.0)
        high = max((t.vmax or 0.0 for t in present), default=0.0)
        maps = []
        for run_id, label in zip(self.plan.run_ids, self.plan.labels):
            row, thumb = image.rows.get(run_id), thumbs[run_id]
            note = ""
            if row is not None and row.prediction is not None:
                confidence = f" ({row.confidence:.0%})" if row.confidence is not None else ""
                note = f"predicts {class_name(row.prediction, self.imagenet[run_id])}{confidence}"
            if thumb is None:
                plain = _missing(f"{label} map", self.unavailable.get(run_id, self.no_thumbnail))
            else:
                plain = Picture(
                    self.painter.colour_thumbnail(thumb.png, thumb.vmin or 0.0, thumb.vmax or 0.0, low, high),
                    f"{label} map of {image_id}",
                    (run_id, image_id, "model"),
                )
            maps.append(MapView(label, "model", plain, _score_text(self.metric, row), note))
        return maps, (f"model maps: {low:.3g} to {high:.3g}" if present else "")

    def _centre_bias_map(self, image: GalleryImage, picture: ThumbnailRow | None, no_reference: bool) -> MapView:
        if no_reference:  # the centre-bias map is a reference for reference maps: nothing to set it beside
            return MapView("centre bias", "centre-bias", _missing("centre-bias map", NO_REFERENCE), "")
        if picture is None:
            return MapView("centre bias", "centre-bias", _missing("centre-bias map", "its size is the picture's"), "")
        size = Painter.size(picture.png)
        if size not in self.centre_maps:
            unit = centre_bias_map(size[0], size[1], self.plan.reference_sigma_frac or CENTRE_BIAS_SIGMA_FRAC).astype(np.float64)
            self.centre_maps[size] = self.painter.colour(unit_range(unit, float(unit.min()), float(unit.max())))
        reference_row = image.rows.get(self.plan.reference_run_id) if self.plan.reference_run_id is not None else None
        score = _score_text(self.metric, reference_row) if reference_row else ""
        return MapView("centre bias", "centre-bias", Picture(self.centre_maps[size], "centre-bias map"), score)


def gallery_view(
    session: Reader,
    plan: GalleryPlan,
    stored: StoredRuns,
    details: dict[int, RunDetails],
    painter: Painter,
    unavailable: dict[int, str],
) -> Gallery:
    """The page's gallery of ``plan``, its pictures painted from the stored thumbnails.
    ``unavailable``: run id → why its maps could not be computed here (shown in the gallery)."""
    rows = _GalleryRows(session, plan, stored, details, painter, unavailable)
    sections = tuple(SectionView(section.title, tuple(rows.row(image) for image in section.images)) for section in plan.sections)
    columns = ("image", rows.reference_name, *plan.labels, "centre bias")
    return Gallery(plan.anchor, plan.title, columns, sections, tuple(rows.missing), f"{rows.reference_name}: {rows.reference_what}")

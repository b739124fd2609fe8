"""Which images the HTML report's galleries show (the paper's Fig. 1), chosen from the stored scores.

A gallery belongs to a comparison (two runs of one group: baseline and DCLS today, trained model and
parent later) or to one run. It shows K images in each of three sections: for a run, its best and
worst scored images and K random others; for a comparison, the images where the second run beats the
first by most, where the first beats the second by most (Δ = second − first, per image, on the images
both scored) and K random others. An image appears in one section only, and the random draw is
seeded, so the same store gives the same galleries and their stored thumbnails are reused.

Each image of a gallery needs three thumbnails per run: the model input (``image``), the reference
map (``reference``) and the run's explanation (``model``) (``THUMBNAIL_KINDS`` of the store). They are
computed outside ``analysis`` (``alignbench.html_report.thumbnails``), which only reads the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from sqlmodel import Session

from alignbench.analysis._queries import ImageRow, ImageValues, image_rows
from alignbench.analysis.compare import Comparison
from alignbench.analysis.runs import RunScore, StoredRuns

DEFAULT_GALLERY = 8  # images per section (--gallery)
DEFAULT_SEED = 0


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
    best = order[:k]
    rest = order[k:]
    worst = rest[np.lexsort((index[rest], -sign * value[rest]))][:k]
    remaining = np.setdiff1d(rest, worst, assume_unique=True)
    chosen = np.random.default_rng(seed).choice(remaining, size=min(k, remaining.size), replace=False) if remaining.size else remaining
    return Picks(
        tuple(int(i) for i in index[best]),
        tuple(int(i) for i in index[worst]),
        tuple(sorted(int(i) for i in index[chosen])),
    )


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


def _rows(session: Session, metric: str, run_ids: list[int], indices: tuple[int, ...]) -> dict[int, dict[int, ImageRow]]:
    """image index → run id → row, for these runs at these images (all runs of one dataset)."""
    out: dict[int, dict[int, ImageRow]] = {i: {} for i in indices}
    first = image_rows(session, run_ids[0], metric, indices)  # the images were picked from this run's scores
    ids = [row.image_id for row in first]
    for run_id, rows in zip(run_ids, [first] + [image_rows(session, r, metric, image_ids=ids) for r in run_ids[1:]]):
        for row in rows:
            out[row.image_index][run_id] = row
    return out


def _sections(session: Session, metric: str, run_ids: list[int], picks: Picks, titles: tuple[str, str, str]) -> tuple[GallerySection, ...]:
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


def run_gallery(session: Session, stored: StoredRuns, run: RunScore, reference: RunScore | None, k: int, *, seed: int, higher_is_better: bool) -> GalleryPlan:
    """A run's K best, K worst and K random scored images."""
    values = stored.values[run.run_id]
    picks = pick_images(values.index, values.value, k, seed=seed, higher_is_better=higher_is_better)
    metric = stored.metric
    run_ids = [run.run_id] + ([reference.run_id] if reference is not None else [])
    sections = _sections(session, metric, run_ids, picks, (
        f"best {metric}", f"worst {metric}", f"random (seed {seed})",
    ))
    return GalleryPlan(
        f"run-{run.run_id}", f"run {run.run_id}: {run.display_name} · {run.group.label}", (run.run_id,), (_label(run),),
        reference.run_id if reference is not None else None, _sigma(reference), sections,
    )


def comparison_gallery(
    session: Session, stored: StoredRuns, comparison: Comparison, runs: dict[int, RunScore], reference: RunScore | None,
    k: int, *, seed: int, higher_is_better: bool,
) -> GalleryPlan:
    """A comparison's images by Δ = second − first run (where the second beats the first by most, and
    the reverse), and K random others, among the images both runs scored."""
    first, second = runs[comparison.baseline_run_id], runs[comparison.dcls_run_id]
    common, delta = _common(stored.values[first.run_id], stored.values[second.run_id])
    picks = pick_images(common, delta, k, seed=seed, higher_is_better=higher_is_better)
    left, right = _label(first), _label(second)
    run_ids = [first.run_id, second.run_id] + ([reference.run_id] if reference is not None else [])
    sections = _sections(session, stored.metric, run_ids, picks, (
        f"{right} beats {left} by most", f"{left} beats {right} by most", f"random (seed {seed})",
    ))
    title = f"{comparison.model}: {left} vs {right} · {first.group.label}"
    return GalleryPlan(
        f"comparison-{first.run_id}-{second.run_id}", title, (first.run_id, second.run_id), (left, right),
        reference.run_id if reference is not None else None, _sigma(reference), sections, comparison,
    )


def _label(run: RunScore) -> str:
    return "DCLS" if run.view.dcls else "baseline"


def plan_galleries(
    session: Session,
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

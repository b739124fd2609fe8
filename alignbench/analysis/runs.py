"""Stored runs as compare and report see them: scored, grouped, and paired baseline-with-DCLS.

Runs are comparable when they share a dataset (name and fingerprint), an explainer setting (method
and parameters) and a protocol: a *group*. Within a group, the runs of one architecture (model name)
pair up as baseline (dense) and DCLS; a model ``alignbench train`` made is a DCLS *variant* of its
architecture (a row of its own, named by its tag), or pairs with the model it was trained from
(``pair_with_parents``); ``pair_two_runs`` pairs any two runs of one dataset. The centre-bias run
of the group's dataset and protocol is the model-free reference. Everything here reads the store;
nothing is computed from images.
"""

from __future__ import annotations

import json
import shlex
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from alignbench.analysis._queries import EMPTY_VALUES, ImageValues, Reader, connection_of, per_image_values
from alignbench.datasets import dataset_label
from alignbench.errors import AlignbenchError, ExplainerError, MetricError
from alignbench.explainers import CENTRE_BIAS, resolve_method  # torch-free: the registry is plain data
from alignbench.models.specs import variant_name
from alignbench.store import listing


@dataclass(frozen=True)
class GroupKey:
    dataset: str
    dataset_fingerprint: str
    method: str
    params: str  # canonical JSON
    protocol: str
    dataset_location: str | None = None  # one per fingerprint: the dataset row's

    @property
    def dataset_label(self) -> str:
        return dataset_label(self.dataset, self.dataset_location)

    @property
    def params_dict(self) -> dict:
        return json.loads(self.params or "{}")

    @property
    def explainer_label(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in sorted(self.params_dict.items()))
        return f"{self.method} ({params})" if params else self.method

    @property
    def label(self) -> str:
        return f"{self.dataset_label} · {self.explainer_label} · {self.protocol}"


def _reference_key(view: listing.RunView) -> tuple[str, str, str]:
    return (view.dataset, view.dataset_fingerprint, view.protocol)


@dataclass(frozen=True)
class RunScore:
    """One stored run with its counts and mean for the metric under study."""

    view: listing.RunView
    metric: str
    n_rows: int
    n_scored: int
    mean: float | None  # mean metric over the run's scored images
    scale: float  # score = mean / scale (the human ceiling for Spearman where known, else 1)

    @property
    def run_id(self) -> int:
        return self.view.run_id

    @property
    def is_reference(self) -> bool:
        return self.view.method == CENTRE_BIAS

    @property
    def score(self) -> float | None:
        return None if self.mean is None else self.mean / self.scale

    @property
    def group(self) -> GroupKey:
        v = self.view
        return GroupKey(v.dataset, v.dataset_fingerprint, v.method, v.params, v.protocol, v.dataset_location)

    @property
    def display_name(self) -> str:
        return variant_name(self.view.model, dcls=self.view.dcls, ca_stream=self.view.ca_stream, tag=self.variant)

    @property
    def model_label(self) -> str:
        """The architecture, and the trained variant's name (tables with a DCLS column of their own)."""
        return f"{self.view.model} · {self.variant}" if self.variant else self.view.model

    @property
    def trained(self) -> bool:
        """Made by ``alignbench train`` (or recorded with an origin): not the architecture's plain weights."""
        return self.view.origin is not None

    @property
    def variant(self) -> str | None:
        """A trained model's name: its tag, else its model id."""
        if not self.trained:
            return None
        return self.view.tag or f"model {self.view.model_id}"


def score_scale(metric: str, ceiling: float | None) -> float:
    """The alignment score normalises mean Spearman by the human ceiling (paper, eq. 2); other metrics are shown as they are."""
    return float(ceiling) if metric == "spearman" and ceiling else 1.0


def score_name(metric: str, ceiling: float | None) -> str:
    return "alignment score" if score_scale(metric, ceiling) != 1.0 else f"mean {metric}"


def score_label(metric: str, ceiling: float | None) -> str:
    """What a score is, in full (table captions, ``compare --json``'s ``scale``)."""
    if score_scale(metric, ceiling) != 1.0:
        return f"alignment score (mean {metric} / human ceiling {ceiling:.4f})"
    from alignbench.metrics import METRICS  # the registry is plain data (torch-free)

    spec = METRICS.get(metric)
    return f"mean {metric}, lower is better" if spec is not None and not spec.higher_is_better else f"mean {metric}"


def canonical_explainer(name: str | None) -> str | None:
    """The stored method name for a name or alias (``threshold`` → ``threshold-gradcam``)."""
    if name is None:
        return None
    try:
        return resolve_method(name).name
    except ExplainerError:
        return name.strip().lower()  # e.g. centre-bias, or a method a newer alignbench stored


@dataclass(frozen=True)
class RunFilter:
    """Which stored runs compare and report read: the filters their commands share, written once."""

    explainer: str | None = None
    dataset: str | None = None
    protocol: str | None = None
    metric: str = "spearman"
    run_id: int | None = None
    include_empty: bool = False  # runs with no stored row (stopped before their first batch) are hidden unless asked for
    run_ids: tuple[int, ...] = ()  # only these model runs (and their references), e.g. compare --runs A B

    @classmethod
    def of(cls, runs: RunFilter | None = None, **filters) -> RunFilter:
        """``runs`` with ``filters`` replacing its fields (a new filter when ``runs`` is None)."""
        from dataclasses import replace

        return replace(runs, **filters) if runs is not None else cls(**filters)

    def options(self) -> str:
        """The filters as the command-line options that select them (``score`` takes the same ones)."""
        parts = [
            f"--{name} {shlex.quote(value)}"  # shell-quoted: the hints that show them are pasted into a shell
            for name, value in (("explainer", self.explainer), ("dataset", self.dataset), ("protocol", self.protocol))
            if value
        ]
        if self.metric != "spearman":
            parts.append(f"--metric {shlex.quote(self.metric)}")
        return " ".join(parts)


@dataclass(frozen=True)
class StoredRuns:
    """The runs under study and their scored per-image values (read once, shared by every table and plot)."""

    metric: str
    runs: list[RunScore]
    values: dict[int, ImageValues] = field(repr=False)
    hidden_empty: int = 0  # runs left out because they have no stored row (RunFilter.include_empty shows them)


def load_runs(db: Reader, runs: RunFilter | None = None, **filters) -> StoredRuns:
    """Every stored run that matches the filters and has their metric, plus the centre-bias runs for them.

    Three queries whatever the number of runs: the runs, their row counts, and every scored value.
    """
    runs = RunFilter.of(runs, **filters)
    metric, run_id = runs.metric, runs.run_id
    try:
        listing.metric_column(metric)  # an unknown metric fails before any query
    except KeyError:
        raise MetricError(
            f"metric {metric!r} has no column in the store; use spearman or a metric `alignbench score --metric` stores"
        ) from None
    method = canonical_explainer(runs.explainer)
    connection = connection_of(db)
    selected = [
        v
        for v in listing.list_runs(connection, dataset_name=runs.dataset, protocol=runs.protocol)
        if (method is None or v.method in (method, CENTRE_BIAS))
        and (run_id is None or v.run_id == run_id)
        and (not runs.run_ids or v.run_id in runs.run_ids or v.method == CENTRE_BIAS)
    ]
    views = [v for v in selected if metric in v.metrics.split(",")]
    # keep only the references of datasets/protocols that some selected model run uses
    wanted = {_reference_key(v) for v in views if v.method != CENTRE_BIAS}
    if method != CENTRE_BIAS and run_id is None:
        views = [v for v in views if v.method != CENTRE_BIAS or _reference_key(v) in wanted]
    models = [v for v in selected if v.method != CENTRE_BIAS]
    if models and not any(v.method != CENTRE_BIAS for v in views):
        _refuse_other_metrics(runs, models)
    ids = [v.run_id for v in views]
    values = per_image_values(connection, ids, metric)
    rows = listing.row_counts(connection, ids) if ids else {}
    scores = []
    for v in views:
        scored = values.get(v.run_id, EMPTY_VALUES)
        mean = float(scored.value.mean()) if len(scored) else None
        scores.append(RunScore(v, metric, rows[v.run_id], len(scored), mean, score_scale(metric, v.ceiling)))
    shown = scores if runs.include_empty or run_id is not None else [r for r in scores if r.n_rows]
    return StoredRuns(metric, shown, values, hidden_empty=len(scores) - len(shown))


def _refuse_other_metrics(runs: RunFilter, selected: Sequence[listing.RunView]) -> None:
    """Runs are stored, but none with the metric asked for (e.g. a MoCo study scored only deletion
    and insertion, and ``--metric`` defaults to spearman): name the metrics they have."""
    stored = sorted({name for v in selected for name in v.metrics.split(",") if name})
    others = RunFilter.of(runs, metric="spearman").options()
    where = f" matching {others}" if others else ""
    raise MetricError(f"no stored run{where} has the metric {runs.metric!r}; they have {', '.join(stored)}: pass --metric {stored[0]}")


def hidden_note(hidden: int) -> str:
    """What compare and report say about the runs they left out for having no stored row."""
    return f"{hidden} run(s) with no stored row hidden: `--all` shows them, `alignbench runs prune --empty` deletes them"


def _best(runs: Sequence[RunScore]) -> RunScore:
    # most images scored for the metric; then the most recent run
    return max(runs, key=lambda r: (r.n_scored, r.run_id))


@dataclass(frozen=True)
class Pairing:
    """One architecture's baseline and DCLS runs in one group, on the images both scored."""

    group: GroupKey
    model: str
    baseline: RunScore | None
    dcls: RunScore | None
    reference: RunScore | None  # the centre-bias run of the group's dataset and protocol
    scale: float
    # metric values on the common images (baseline x, DCLS y), in image order; one side alone: its own images
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    # the centre-bias values on those images that the reference scored too
    reference_values: np.ndarray = field(repr=False)
    notes: tuple[str, ...] = ()
    # which comparison this is: dcls-vs-baseline (then ``variant`` names a trained DCLS model, None
    # for the architecture's own DCLS weights), against-parent (baseline = the parent, dcls = the
    # trained model), or runs (baseline = run A, dcls = run B)
    kind: str = "dcls-vs-baseline"
    variant: str | None = None

    @property
    def complete(self) -> bool:
        return self.baseline is not None and self.dcls is not None

    @property
    def n_pairs(self) -> int:
        return int(self.x.size) if self.complete else 0

    @property
    def baseline_score(self) -> float | None:
        return _scaled_mean(self.x, self.scale) if self.baseline is not None else None

    @property
    def dcls_score(self) -> float | None:
        return _scaled_mean(self.y, self.scale) if self.dcls is not None else None

    @property
    def reference_score(self) -> float | None:
        return _scaled_mean(self.reference_values, self.scale)


def _scaled_mean(values: np.ndarray, scale: float) -> float | None:
    return float(values.mean() / scale) if values.size else None


def _choose(runs: Sequence[RunScore], side: str, model: str) -> tuple[RunScore | None, list[str]]:
    if not runs:
        return None, []
    best = _best(runs)
    notes = []
    if len(runs) > 1:
        others = ", ".join(str(r.run_id) for r in runs if r is not best)
        notes.append(f"{model}: {len(runs)} {side} runs match; compared run {best.run_id} (most images scored; also {others})")
    return best, notes


def _shared(index: np.ndarray, other: ImageValues) -> tuple[np.ndarray, np.ndarray]:
    """(which of the images ``index`` ``other`` scored, as a mask; ``other``'s values on them, in image order)."""
    if not index.size or not len(other):
        return np.zeros(index.size, dtype=bool), np.empty(0)
    # both are sorted and unique, so the two masks select the same images in the same order
    mine = np.isin(index, other.index, assume_unique=True, kind="table")
    theirs = np.isin(other.index, index, assume_unique=True, kind="table")
    return mine, other.value[theirs]


def _references(runs: Iterable[RunScore]) -> dict[tuple[str, str, str], RunScore]:
    """The centre-bias run of each (dataset, fingerprint, protocol): the one with the most images."""
    by_key: dict[tuple[str, str, str], list[RunScore]] = defaultdict(list)
    for run in runs:
        if run.is_reference:
            by_key[_reference_key(run.view)].append(run)
    return {key: _best(candidates) for key, candidates in by_key.items()}


def _pairing(
    group: GroupKey,
    model: str,
    baseline: RunScore | None,
    dcls: RunScore | None,
    reference: RunScore | None,
    values: dict[int, ImageValues],
    notes: list[str],
    *,
    kind: str = "dcls-vs-baseline",
    variant: str | None = None,
    sides: tuple[str, str] = ("baseline", "DCLS"),
) -> Pairing:
    """The two runs' values on the images both scored (one side alone: its own images), and the reference's on those."""
    present = [r for r in (baseline, dcls) if r is not None]
    scale = present[0].scale
    if baseline is not None and dcls is not None:
        b, d = values.get(baseline.run_id, EMPTY_VALUES), values.get(dcls.run_id, EMPTY_VALUES)
        in_both, y = _shared(b.index, d)
        common, x = b.index[in_both], b.value[in_both]
        if common.size < max(len(b), len(d)):
            notes.append(f"{model}: compared on the {common.size:,} images both runs scored ({sides[0]} {len(b):,}, {sides[1]} {len(d):,})")
    else:
        only = values.get(present[0].run_id, EMPTY_VALUES)
        common = only.index
        x = only.value if baseline is not None else np.empty(0)
        y = only.value if dcls is not None else np.empty(0)
    reference_values = _shared(common, values.get(reference.run_id, EMPTY_VALUES))[1] if reference else np.empty(0)
    return Pairing(group, model, baseline, dcls, reference, scale, x, y, reference_values, tuple(notes), kind, variant)


def pair_runs(runs: Iterable[RunScore], values: dict[int, ImageValues], *, trained: bool = False) -> list[Pairing]:
    """Pair the runs of each architecture within each group (see the module docstring).

    Several runs on one side (other checkpoints, other metric sets): the one with the most scored
    images is compared, and a note says so. Runs on different image subsets are compared on the
    images both scored. Trained models are left out, unless ``trained``: then each trained DCLS
    model is a variant of its own against the architecture's baseline (trained dense models are
    compared with their parents, not here).
    """
    runs = list(runs)
    references = _references(runs)
    sides: dict[tuple[GroupKey, str, str | None], dict[bool, list[RunScore]]] = defaultdict(lambda: {False: [], True: []})
    for run in runs:
        # a CA-Stream model is no baseline of its architecture: --against parent or --runs compare it
        if run.is_reference or run.view.ca_stream or (run.trained and not (trained and run.view.dcls)):
            continue
        sides[(run.group, run.view.model, run.variant)][run.view.dcls].append(run)
    if trained:  # each trained variant is compared with the architecture's (untrained) baseline
        for (group, model, variant), by_side in sides.items():
            if variant is not None:
                by_side[False] = sides[(group, model, None)][False] if (group, model, None) in sides else []

    pairings = []
    for (group, model, variant), by_side in sides.items():
        name = f"{model} · {variant}" if variant else model
        baseline, notes = _choose(by_side[False], "baseline", name)
        dcls, dcls_notes = _choose(by_side[True], "DCLS", name)
        if variant is not None and dcls is None:
            continue  # a variant exists only through its DCLS runs
        reference = references.get((group.dataset, group.dataset_fingerprint, group.protocol))
        pairings.append(_pairing(group, model, baseline, dcls, reference, values, notes + dcls_notes, variant=variant))
    return pairings


def pair_with_parents(runs: Iterable[RunScore], values: dict[int, ImageValues]) -> list[Pairing]:
    """Each trained model's run against its parent's run in the same group, on the images both scored
    (baseline = the parent, dcls = the trained model). A trained run whose parent has no run in the
    group is one-sided, and its note says what to score."""
    runs = list(runs)
    references = _references(runs)
    by_model: dict[tuple[GroupKey, int | None], list[RunScore]] = defaultdict(list)
    for run in runs:
        if not run.is_reference:
            by_model[(run.group, run.view.model_id)].append(run)
    pairings = []
    for (group, _), trained_runs in by_model.items():
        child = trained_runs[0]
        if child.view.parent_id is None:
            continue
        name = f"{child.view.model} · {child.variant}"
        trained, notes = _choose(trained_runs, "trained", name)
        parent, parent_notes = _choose(by_model.get((group, child.view.parent_id), []), "parent", name)
        if parent is None:
            notes.append(
                f"{name}: its parent has no run with {group.explainer_label} on {group.dataset} / {group.protocol}; "
                "score the parent with the same options to compare"
            )
        reference = references.get((group.dataset, group.dataset_fingerprint, group.protocol))
        pairings.append(
            _pairing(
                group,
                child.view.model,
                parent,
                trained,
                reference,
                values,
                notes + parent_notes,
                kind="against-parent",
                variant=child.variant,
                sides=("parent", "trained"),
            )
        )
    return pairings


def pair_two_runs(first: RunScore, second: RunScore, runs: Iterable[RunScore], values: dict[int, ImageValues]) -> Pairing:
    """Run ``second`` against run ``first`` on the images both scored (they must score one dataset)."""
    a, b = first.view, second.view
    if (a.dataset, a.dataset_fingerprint) != (b.dataset, b.dataset_fingerprint):
        raise AlignbenchError(
            f"runs {a.run_id} and {b.run_id} scored different datasets ({a.dataset} {a.dataset_fingerprint[:12]}, "
            f"{b.dataset} {b.dataset_fingerprint[:12]}); compare two runs of one dataset"
        )
    notes = []
    if first.group != second.group:
        notes.append(
            f"run {a.run_id} is {first.group.explainer_label} / {a.protocol}, run {b.run_id} {second.group.explainer_label} / {b.protocol}"
        )
    reference = _references(runs).get(_reference_key(a))
    return _pairing(
        first.group,
        f"run {b.run_id} vs run {a.run_id}",
        first,
        second,
        reference,
        values,
        notes,
        kind="runs",
        sides=(f"run {a.run_id}", f"run {b.run_id}"),
    )

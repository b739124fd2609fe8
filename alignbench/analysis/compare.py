"""DCLS vs baseline per architecture, with the statistics the paper leaves out, and rankings (store only).

For each architecture with a baseline and a DCLS run in one group (same dataset, explainer setting
and protocol; see alignbench.analysis.runs): both scores on the images both runs scored, Δ = DCLS −
baseline, a paired bootstrap 95% confidence interval of Δ, the Wilcoxon signed-rank p-value, and a
verdict. Scores are alignment scores (mean Spearman / human ceiling) where the dataset has a
ceiling, else the metric's mean; Δ and its interval are on the same scale.

The same statistics compare any two variants: each trained DCLS model is a row of its own beside
the architecture's DCLS weights (``kind`` dcls-vs-baseline, ``variant`` its tag); ``against="parent"``
compares each trained model with the model it was trained from; ``run_pair=(A, B)`` run B with run A.
The ``baseline`` / ``dcls`` fields are then the parent / trained model, or run A / run B.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from alignbench.analysis import NOTHING_STORED
from alignbench.analysis._queries import Reader
from alignbench.analysis.runs import (
    GroupKey,
    Pairing,
    RunFilter,
    RunScore,
    StoredRuns,
    hidden_note,
    load_runs,
    pair_runs,
    pair_two_runs,
    pair_with_parents,
    score_label,
    score_name,
)
from alignbench.analysis.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, paired_bootstrap_ci, wilcoxon_signed_rank
from alignbench.errors import AlignbenchError
from alignbench.metrics import metric_spec  # torch-free: the registry is plain data
from alignbench.store import StoreMissing, open_store_to_read
from alignbench.store.listing import canonical_json

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.scoring import ScoreResult

# Below this many image pairs neither the bootstrap interval nor the signed-rank test says much (with
# 5 pairs the smallest two-sided Wilcoxon p is 0.0625): the verdict is "too few pairs".
MIN_PAIRS = 10
ALPHA = 0.05
CONFIDENCE = 0.95
# "identical": every per-image difference is float rounding, so no test is run on it. Rounding is
# relative to the values' scale, not absolute: a from-dense DCLS model computes the dense function up
# to float32 rounding (eps 1.2e-7) accumulated through the ~100 layers its output passes, ~1e-5 of a
# metric's range — 2e-5 of Spearman's ρ, but 1e-3 of average drop, a percentage whose per-image
# differences of ~1e-4 an absolute 1e-6 called "no significant difference".
IDENTICAL_RELATIVE = 1e-5
# The range of each metric's per-image values (max - min), which IDENTICAL_RELATIVE is taken of.
METRIC_RANGES: dict[str, float] = {
    "spearman": 2.0,  # ρ in [-1, 1]
    "pointing-game": 1.0,  # 0 or 1
    "stochastic-pointing-game": 1.0,  # a fraction of the sampled points
    "energy-in-box": 1.0,  # a share of the map's mass
    "deletion": 1.0,  # the area under a probability curve over [0, 1]
    "insertion": 1.0,
    "average-drop": 100.0,  # a percentage
    "average-increase": 100.0,  # 0 or 100
    "average-gain": 100.0,  # a percentage
    "auc_judd": 1.0,  # areas under ROC curves
    "auc_borji": 1.0,
    "sauc": 1.0,
    "cc": 2.0,  # a correlation
    "sim": 1.0,  # histogram intersection of two distributions
}
# Metrics without a fixed range (nss, kl, ig: unbounded) are judged relative to the largest value
# either run stored on the images compared.
# compare's modes: which runs each row pairs
AGAINST = ("baseline", "parent")


@dataclass(frozen=True)
class Comparison:
    """One row of ``alignbench compare`` (and of ``compare --json``)."""

    model: str
    dataset: str
    explainer: str
    explainer_params: dict[str, Any]
    protocol: str
    metric: str
    scale: str  # what baseline/dcls/delta are: "alignment score" or "mean <metric>"
    baseline: float | None
    dcls: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n_pairs: int
    verdict: str  # better | worse | identical | no significant difference | too few pairs | missing DCLS run | missing baseline run
    baseline_run_id: int | None
    dcls_run_id: int | None
    baseline_n_scored: int
    dcls_n_scored: int
    centre_bias: float | None  # the centre-bias reference on the same images, same scale
    centre_bias_n: int  # images it was averaged over
    centre_bias_run_id: int | None
    notes: tuple[str, ...] = ()
    dataset_location: str | None = None  # where the dataset's files were read (two folder datasets differ here)
    kind: str = "dcls-vs-baseline"  # or against-parent / runs: then baseline/dcls are parent/trained, run A/run B
    variant: str | None = None  # the trained model's tag (dcls-vs-baseline: None for the architecture's DCLS weights)
    baseline_label: str | None = None  # what each side is, in words
    dcls_label: str | None = None

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["notes"] = list(self.notes)
        for key, value in row.items():  # JSON has no NaN
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
        return row


@dataclass(frozen=True)
class GroupComparison:
    """The comparisons of one group (dataset, explainer setting, protocol) and the ranking of its runs."""

    group: GroupKey
    scale: str  # what the scores are (see score_label)
    scale_name: str  # the same in two words (see score_name)
    rows: tuple[Comparison, ...]  # one per architecture, by model name
    ranking: tuple[RunScore, ...]  # every run of the group and the reference, best score first
    reference: RunScore | None  # the centre-bias run of the group's dataset and protocol


@dataclass(frozen=True)
class CompareResult:
    metric: str
    n_resamples: int
    groups: list[GroupComparison]
    hidden_empty: int = 0  # runs with no stored row, left out (RunFilter.include_empty shows them)
    kind: str = "dcls-vs-baseline"  # against-parent, runs

    @property
    def comparisons(self) -> list[Comparison]:
        return [row for group in self.groups for row in group.rows]

    def to_json(self) -> list[dict[str, Any]]:
        """``compare --json``: one row per architecture and group."""
        return [row.to_json() for row in self.comparisons]


_MISSING = {
    "dcls-vs-baseline": ("missing baseline run", "missing DCLS run"),
    "against-parent": ("missing parent run", "missing trained run"),
    "runs": ("missing run", "missing run"),
}


def identical_bound(metric: str, x: np.ndarray, y: np.ndarray) -> float:
    """The largest per-image difference that is float rounding: IDENTICAL_RELATIVE of the metric's
    range (METRIC_RANGES), or of the largest magnitude in ``x`` and ``y`` for an unbounded metric."""
    span = METRIC_RANGES.get(metric)
    if span is None:
        span = float(max(np.abs(x).max(initial=0.0), np.abs(y).max(initial=0.0))) or 1.0
    return IDENTICAL_RELATIVE * span


def is_identical(pairing: Pairing) -> bool:
    """Both runs scored the same on every shared image, up to float rounding (``identical_bound``)."""
    if not (pairing.complete and pairing.n_pairs > 0):
        return False
    metric = (pairing.baseline or pairing.dcls).metric
    return float(abs(pairing.y - pairing.x).max()) <= identical_bound(metric, pairing.x, pairing.y)


def _verdict(pairing: Pairing, delta: float | None, low: float, high: float, p: float, higher_is_better: bool) -> str:
    missing_baseline, missing_dcls = _MISSING[pairing.kind]
    if pairing.dcls is None:
        return missing_dcls
    if pairing.baseline is None:
        return missing_baseline
    if is_identical(pairing):
        return "identical"
    if pairing.n_pairs < MIN_PAIRS:
        return "too few pairs"
    if (low > 0 or high < 0) and p < ALPHA:  # NaN (no non-zero difference) compares False
        return "better" if (delta > 0) == higher_is_better else "worse"
    return "no significant difference"


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def compare_pairing(
    pairing: Pairing,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    higher_is_better: bool = True,
) -> Comparison:
    """The statistics of one pairing; one-sided pairings keep their side's score and no statistics."""
    group = pairing.group
    delta = low = high = p = math.nan
    if pairing.complete and pairing.n_pairs:
        delta = float((pairing.y - pairing.x).mean()) / pairing.scale
        low, high = paired_bootstrap_ci(pairing.x, pairing.y, n_resamples=n_resamples, confidence=CONFIDENCE, seed=seed)
        low, high = low / pairing.scale, high / pairing.scale
        # differences at rounding level carry no signal: a signed-rank test over them is noise
        p = math.nan if is_identical(pairing) else wilcoxon_signed_rank(pairing.x, pairing.y).p_value
    reference = pairing.reference
    some_run = pairing.baseline or pairing.dcls
    return Comparison(
        model=pairing.model,
        dataset=group.dataset,
        explainer=group.method,
        explainer_params=group.params_dict,
        protocol=group.protocol,
        metric=some_run.metric,
        scale=score_label(some_run.metric, some_run.view.ceiling),
        baseline=pairing.baseline_score,
        dcls=pairing.dcls_score,
        delta=_nan_to_none(delta),
        ci_low=_nan_to_none(low),
        ci_high=_nan_to_none(high),
        p_value=_nan_to_none(p),
        n_pairs=pairing.n_pairs,
        verdict=_verdict(pairing, delta, low, high, p, higher_is_better),
        baseline_run_id=pairing.baseline.run_id if pairing.baseline else None,
        dcls_run_id=pairing.dcls.run_id if pairing.dcls else None,
        baseline_n_scored=pairing.baseline.n_scored if pairing.baseline else 0,
        dcls_n_scored=pairing.dcls.n_scored if pairing.dcls else 0,
        centre_bias=pairing.reference_score,
        centre_bias_n=int(pairing.reference_values.size),
        centre_bias_run_id=reference.run_id if reference else None,
        notes=pairing.notes,
        dataset_location=group.dataset_location,
        kind=pairing.kind,
        variant=pairing.variant,
        baseline_label=_side_label(pairing.baseline),
        dcls_label=_side_label(pairing.dcls),
    )


def _side_label(run: RunScore | None) -> str | None:
    return None if run is None else f"run {run.run_id}: {run.display_name}"


def _ranked(runs: list[RunScore], higher_is_better: bool = True) -> tuple[RunScore, ...]:
    # best score first (the lowest for a lower-is-better metric such as kl); a run with no scored image last
    sign = -1.0 if higher_is_better else 1.0
    return tuple(sorted(runs, key=lambda r: (r.score is None, sign * (r.score or 0.0), r.run_id)))


def _higher_is_better(metric: str) -> bool:
    return metric_spec(metric).higher_is_better


def _pairings(stored, against: str, run_pair: tuple[int, int] | None) -> list[Pairing]:
    if run_pair is not None:
        by_id = {run.run_id: run for run in stored.runs if not run.is_reference}
        missing = [str(run_id) for run_id in run_pair if run_id not in by_id]
        if missing:
            raise AlignbenchError(
                f"no stored run {' or '.join(missing)} scores {stored.metric}; `alignbench report` lists the runs and their ids"
            )
        return [pair_two_runs(by_id[run_pair[0]], by_id[run_pair[1]], stored.runs, stored.values)]
    if against == "parent":
        return pair_with_parents(stored.runs, stored.values)
    if against != "baseline":
        raise AlignbenchError(f"unknown --against {against!r}; use one of {', '.join(AGAINST)}")
    return pair_runs(stored.runs, stored.values, trained=True)


def compare_runs(
    db: Reader,
    runs: RunFilter | None = None,
    *,
    against: str = "baseline",
    run_pair: tuple[int, int] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    stored: StoredRuns | None = None,
    **filters,
) -> CompareResult:
    """Compare the runs that match the filters — every architecture's baseline with its DCLS weights
    and each trained DCLS variant (``against="baseline"``), each trained model with its parent
    (``against="parent"``), or run B with run A (``run_pair``) — and rank the runs of each group.
    ``stored``: those runs already read (``load_runs``), e.g. by a caller that reports on them too."""
    runs = RunFilter.of(runs, **filters)
    if run_pair is not None:
        runs = RunFilter(metric=runs.metric, run_ids=tuple(run_pair), include_empty=runs.include_empty)
    metric = runs.metric
    higher_is_better = _higher_is_better(metric)
    stored = stored if stored is not None else load_runs(db, runs)
    by_group: dict[GroupKey, list[Pairing]] = defaultdict(list)
    for pairing in _pairings(stored, against, run_pair):
        by_group[pairing.group].append(pairing)
    groups = []
    for group in sorted(by_group, key=lambda g: (g.dataset, g.method, g.params, g.protocol)):
        pairings = sorted(by_group[group], key=lambda p: (p.model, p.variant or ""))
        rows = tuple(compare_pairing(p, n_resamples=n_resamples, seed=seed, higher_is_better=higher_is_better) for p in pairings)
        reference = pairings[0].reference
        paired = {run.run_id for p in pairings for run in (p.baseline, p.dcls) if run is not None}
        members = [r for r in stored.runs if not r.is_reference and (r.group == group or r.run_id in paired)]
        some = members[0]
        groups.append(
            GroupComparison(
                group,
                score_label(metric, some.view.ceiling),
                score_name(metric, some.view.ceiling),
                rows,
                _ranked(members + ([reference] if reference else []), higher_is_better),
                reference,
            )
        )
    kind = "runs" if run_pair is not None else ("against-parent" if against == "parent" else "dcls-vs-baseline")
    return CompareResult(metric, n_resamples, groups, hidden_empty=stored.hidden_empty, kind=kind)


def compare(
    db: str | None = None,
    runs: RunFilter | None = None,
    *,
    against: str = "baseline",
    run_pair: tuple[int, int] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    **filters,
) -> CompareResult:
    """``alignbench compare``: open the store at ``db`` read-only and compare the runs ``runs`` (or
    ``filters``: the fields of ``RunFilter``) selects, as ``compare_runs`` does.

    Raises AlignbenchError (exit code 1) saying what to run when nothing can be compared: an empty
    or missing store, or no model run matching the filters.
    """
    runs = RunFilter.of(runs, **filters)
    if against not in AGAINST:
        raise AlignbenchError(f"unknown --against {against!r}; use one of {', '.join(AGAINST)}")
    try:
        store = open_store_to_read(db)
    except StoreMissing:
        raise AlignbenchError(NOTHING_STORED, exit_code=1) from None
    try:
        with store.engine.connect() as connection:  # Core only: reading never imports the ORM
            result = compare_runs(connection, runs, against=against, run_pair=run_pair, n_resamples=n_resamples, seed=seed)
    finally:
        store.close()
    if not result.comparisons and against == "parent":
        raise AlignbenchError(
            "no trained model has runs matching these filters; train one (`alignbench train`), score it "
            "(`alignbench score --trained TAG`) and its parent with the same options",
            exit_code=1,
        )
    if not result.comparisons:
        options = runs.options()
        if result.hidden_empty:
            raise AlignbenchError(
                f"no stored run{' matching ' + options if options else ''} has a row to compare; {hidden_note(result.hidden_empty)}",
                exit_code=1,
            )
        if not options:
            raise AlignbenchError(NOTHING_STORED, exit_code=1)
        raise AlignbenchError(
            f"no stored runs match {options}; run `alignbench score MODEL {options}` and "
            f"`alignbench score MODEL --dcls {options}` first (`alignbench report` lists what is stored)",
            exit_code=1,
        )
    return result


def compare_results(results: Iterable[ScoreResult], *, db: str | None = None) -> CompareResult | None:
    """``alignbench compare`` restricted to the groups (dataset, explainer setting, protocol) of
    ``results`` (a study's runs: ``alignbench.scoring.study.run_study`` is given it by the CLI); None
    when none of them has anything to compare."""
    results = list(results)
    if not results:
        return None
    metrics = results[0].metrics
    metric = "spearman" if "spearman" in metrics else next(iter(metrics))
    wanted = {(r.dataset, r.explainer, canonical_json(r.explainer_params), r.protocol) for r in results}
    groups, seen = [], set()
    for dataset, method, _params, protocol in sorted(wanted):
        if (dataset, method, protocol) in seen:
            continue
        seen.add((dataset, method, protocol))
        try:
            result = compare(db, explainer=method, dataset=dataset, protocol=protocol, metric=metric)
        except AlignbenchError:
            continue  # nothing stored to compare in this group
        groups += [g for g in result.groups if (g.group.dataset, g.group.method, g.group.params, g.group.protocol) in wanted]
    if not groups:
        return None
    return CompareResult(metric, result.n_resamples, groups)

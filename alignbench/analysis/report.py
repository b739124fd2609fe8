"""What ``alignbench report`` shows, computed from the store alone: tables, figure data and exports.

The paper's results are one table and four figures; the same, for whatever runs are stored:

- the runs table (every run: model, DCLS, explainer, dataset, protocol, counts, mean, score);
- the paper's table: per architecture and explainer, baseline and DCLS scores on the images both
  scored, with the centre-bias reference on the same images (the statistics are ``compare``'s job);
- figure 2: DCLS score against baseline score per architecture (y = x is "no change");
- figure 3: per-architecture bars for each explainer, with and without DCLS;
- figure 4: parameter count against score for the baselines, with Pearson's r and Spearman's ρ;
- per run, a histogram of the per-image metric; with ``run_id`` and ``worst``, the images the model
  agrees with humans least on.

Tables are lists of plain dicts (``Report.tables()``), so the CLI can print them and pandas can
export them without this module importing pandas.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignbench.analysis import DEFAULT_BINS, NOTHING_STORED  # defined numpy-free there, for the CLI's --bins default
from alignbench.analysis._queries import Reader, WorstImage, worst_images
from alignbench.analysis.runs import GroupKey, Pairing, RunFilter, RunScore, StoredRuns, hidden_note, load_runs, pair_runs, score_label
from alignbench.analysis.stats import pearson_r, spearman_rho
from alignbench.errors import AlignbenchError
from alignbench.metrics import metric_spec  # torch-free: the registry is plain data
from alignbench.store import StoreMissing, open_store_to_read

DEFAULT_WORST = 10


@dataclass(frozen=True)
class Histogram:
    run: RunScore
    edges: np.ndarray  # bins + 1 edges
    counts: np.ndarray


@dataclass(frozen=True)
class ParameterFit:
    """Figure 4 for one group: the baselines' parameter counts against their scores."""

    group: GroupKey
    scale: str
    models: tuple[str, ...]
    param_counts: tuple[int, ...]
    scores: tuple[float, ...]
    pearson_r: float
    spearman_rho: float


@dataclass(frozen=True)
class Report:
    metric: str
    runs: list[RunScore]
    pairings: list[Pairing]
    histograms: list[Histogram]
    parameter_fits: list[ParameterFit]
    worst_run: RunScore | None = None
    worst: list[WorstImage] = field(default_factory=list)
    message: str | None = None  # why the report is empty, and what to run
    hidden_empty: int = 0  # runs with no stored row, left out (RunFilter.include_empty shows them)

    @property
    def empty(self) -> bool:
        return not self.runs

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Every table of the report as rows of plain values (the CSV / JSON / Markdown exports)."""
        return {
            "runs": [_run_row(run) for run in self.runs],
            "pairs": [_pair_row(p) for p in self.pairings],
            "parameter_correlation": [_fit_row(f) for f in self.parameter_fits],
            "histograms": [
                {"run_id": h.run.run_id, "bin_low": float(lo), "bin_high": float(hi), "count": int(n)}
                for h in self.histograms
                for lo, hi, n in zip(h.edges[:-1], h.edges[1:], h.counts)
            ],
            "worst": [
                {
                    "run_id": self.worst_run.run_id,
                    "image_index": w.image_index,
                    "image_id": w.image_id,
                    "target": w.target,
                    "prediction": w.prediction,
                    "confidence": w.confidence,
                    self.metric: w.value,
                }
                for w in self.worst
            ]
            if self.worst_run is not None
            else [],
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _run_row(run: RunScore) -> dict[str, Any]:
    v = run.view
    return {
        "run_id": run.run_id,
        "model": v.model,
        "dcls": bool(v.dcls),
        "family": v.family,
        "param_count": v.param_count,
        "explainer": v.method,
        "explainer_params": v.params,
        "dataset": v.dataset,
        "dataset_location": v.dataset_location,
        "protocol": v.protocol,
        "status": v.status,
        "n_images": v.n_images,
        "n_rows": run.n_rows,
        "n_scored": run.n_scored,
        "n_skipped": run.n_rows - run.n_scored,
        f"mean_{run.metric.replace('-', '_')}": _finite(run.mean),
        "alignment_score": _finite(run.score) if run.scale != 1.0 else None,
        "reference": run.is_reference,
    }


def _pair_row(p: Pairing) -> dict[str, Any]:
    return {
        "model": p.model,
        "dataset": p.group.dataset,
        "explainer": p.group.method,
        "explainer_params": p.group.params,
        "protocol": p.group.protocol,
        "baseline": p.baseline_score,
        "dcls": p.dcls_score,
        "delta": None if not p.complete or not p.n_pairs else p.dcls_score - p.baseline_score,
        "n_pairs": p.n_pairs,
        "centre_bias": p.reference_score,
        "baseline_run_id": p.baseline.run_id if p.baseline else None,
        "dcls_run_id": p.dcls.run_id if p.dcls else None,
        "scale": score_label((p.baseline or p.dcls).metric, (p.baseline or p.dcls).view.ceiling),
    }


def _fit_row(f: ParameterFit) -> dict[str, Any]:
    return {
        "dataset": f.group.dataset,
        "explainer": f.group.method,
        "explainer_params": f.group.params,
        "protocol": f.group.protocol,
        "n_models": len(f.models),
        "pearson_r": _finite(f.pearson_r),
        "spearman_rho": _finite(f.spearman_rho),
        "scale": f.scale,
    }


def histogram(run: RunScore, values: np.ndarray, bins: int = DEFAULT_BINS) -> Histogram:
    """Counts of a run's per-image values; Spearman's ρ on its whole range [-1, 1] so runs line up."""
    if run.metric == "spearman":
        low, high = -1.0, 1.0
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        high = high if high > low else low + 1.0
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return Histogram(run, edges, counts)


def parameter_fits(pairings: list[Pairing]) -> list[ParameterFit]:
    """Per group, the baselines with a known parameter count and a score (figure 4)."""
    points: dict[GroupKey, list[tuple[str, int, float]]] = defaultdict(list)
    for p in pairings:
        run = p.baseline
        if run is None or run.view.param_count is None or run.score is None:
            continue
        points[p.group].append((p.model, int(run.view.param_count), float(run.score)))
    fits = []
    for group, rows in points.items():
        if len(rows) < 2:
            continue
        rows.sort(key=lambda row: row[1])
        models, params, scores = zip(*rows)
        some = next(p.baseline for p in pairings if p.group == group and p.baseline is not None)
        fits.append(
            ParameterFit(
                group,
                score_label(some.metric, some.view.ceiling),
                models,
                params,
                scores,
                pearson_r(np.array(params, dtype=float), np.array(scores)),
                spearman_rho(np.array(params, dtype=float), np.array(scores)),
            )
        )
    return fits


def build_report(
    db: Reader,
    runs: RunFilter | None = None,
    *,
    worst: int | None = None,
    bins: int = DEFAULT_BINS,
    stored: StoredRuns | None = None,
    **filters,
) -> Report:
    """The report of the runs matching the filters; with ``run_id``, of that run and its ``worst`` images.
    ``stored``: those runs already read (``load_runs``), e.g. by a caller that compares them too."""
    runs = RunFilter.of(runs, **filters)
    metric, run_id = runs.metric, runs.run_id
    spec = metric_spec(metric)
    if worst is not None and worst < 1:
        raise AlignbenchError(f"--worst must be at least 1, got {worst}")
    if bins < 1:
        raise AlignbenchError(f"--bins must be at least 1, got {bins}")
    stored = stored if stored is not None else load_runs(db, runs)
    if run_id is not None and not stored.runs:
        raise AlignbenchError(
            f"no run {run_id} with metric {metric!r} in the store; `alignbench report` lists the stored runs and their ids"
        )
    pairings = pair_runs(stored.runs, stored.values) if run_id is None else []
    histograms = [histogram(run, stored.values[run.run_id].value, bins) for run in stored.runs]
    worst_run = stored.runs[0] if run_id is not None else None
    worst_rows = (
        worst_images(db, run_id, metric, worst or DEFAULT_WORST, higher_is_better=spec.higher_is_better) if worst_run is not None else []
    )
    return Report(
        metric, stored.runs, pairings, histograms, parameter_fits(pairings), worst_run, worst_rows, hidden_empty=stored.hidden_empty
    )


def report(
    db: str | None = None,
    runs: RunFilter | None = None,
    *,
    worst: int | None = None,
    bins: int = DEFAULT_BINS,
    **filters,
) -> Report:
    """``alignbench report``: open the store at ``db`` read-only and build the report of the runs
    ``runs`` (or ``filters``: the fields of ``RunFilter``) selects.

    An empty or missing store, or no run matching the filters, gives an empty report whose
    ``message`` says what to run (the CLI exits 0 with it).
    """
    runs = RunFilter.of(runs, **filters)
    metric = runs.metric
    if worst is not None and runs.run_id is None:
        raise AlignbenchError("--worst needs --run ID: the run whose images to list (`alignbench report` shows run ids)")
    try:
        store = open_store_to_read(db)
    except StoreMissing:
        return Report(metric, [], [], [], [], message=NOTHING_STORED)
    try:
        with store.engine.connect() as connection:  # Core only: reading never imports the ORM
            result = build_report(connection, runs, worst=worst, bins=bins)
    finally:
        store.close()
    if result.empty:
        options = runs.options()
        message = NOTHING_STORED if not options else f"no stored runs match {options}; run `alignbench score MODEL {options}` first"
        if result.hidden_empty:
            message = f"no stored run{' matching ' + options if options else ''} has a row yet; {hidden_note(result.hidden_empty)}"
        return Report(metric, [], [], [], [], message=message, hidden_empty=result.hidden_empty)
    return result

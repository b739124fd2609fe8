"""The main job: explain every image of a dataset, score it against the human maps, store every row.

A run is identified by its inputs (model weights fingerprint, explainer setting, dataset fingerprint,
protocol, metric set), so the same request twice computes once: the second time the answer comes from
the store and nothing here imports torch. Rows are committed batch by batch; an interrupted run
(Ctrl-C, kill -9) resumes with the images it has not stored, and ends with exactly one row per image.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

from alignbench._utils.precision import check_precision
from alignbench.datasets import DATASETS, open_dataset
from alignbench.distributed import agree, all_done, join_launch, launched_ranks
from alignbench.errors import AlignbenchError, MetricError, ModelError
from alignbench.explainers import explainer_setting
from alignbench.metrics import METRICS, default_metrics, metric_spec
from alignbench.models import ModelRequest, check_device_name, model_identity
from alignbench.scoring.identity import RunIdentity
from alignbench.scoring.lifecycle import settle_status
from alignbench.scoring.request import PROTOCOLS, ProgressCallback, ScoreRequest, ScoreResult
from alignbench.store import StoreMissing, StoreOutdated, open_store
from alignbench.store import queries as q
from alignbench.store.engine import store_exists
from alignbench.store.liveness import shown_status
from alignbench.store.tables import Dataset, Run

__all__ = ["score", "trained_request"]


def _validate(request: ScoreRequest) -> None:
    """Every option checked before anything is read or stored, whether or not the answer is cached."""
    check_device_name(request.device)
    cores = os.cpu_count() or 1
    if request.workers is not None and not 0 <= request.workers <= cores:
        raise AlignbenchError(
            f"--workers must be between 0 and {cores} (this machine's cores), got {request.workers}; "
            "0 decodes the images in the main process"
        )

    if request.protocol not in PROTOCOLS:
        raise AlignbenchError(f"unknown protocol {request.protocol!r}; use one of: {', '.join(PROTOCOLS)}")
    for metric in request.metrics or ():
        metric_spec(metric)  # the first unknown one is refused, naming those available
    if request.metrics is not None and not request.metrics:
        raise MetricError("no metric given; pass --metric spearman (or a comma-separated list)")
    if request.limit is not None and request.limit < 1:
        raise AlignbenchError(f"--limit must be at least 1, got {request.limit}")
    if request.batch_size < 1:
        raise AlignbenchError(f"--batch-size must be at least 1, got {request.batch_size}")
    check_precision(request.precision)
    for metric, params in request.metric_params.items():
        if metric not in (request.metrics or ()):
            continue
        unknown = sorted(set(params) - set(metric_spec(metric).params))
        if unknown:
            raise MetricError(f"metric {metric!r} takes no parameter {unknown[0]!r}")
        steps = params.get("steps")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise MetricError(f"--steps must be a whole number of at least 1, got {steps!r}")


def _check_metrics_fit(metrics: Sequence[str], dataset: Any) -> None:
    boxed = [m for m in metrics if METRICS[m].needs_boxes]
    if boxed and not dataset.has_boxes:
        with_boxes = ", ".join(name for name, spec in DATASETS.items() if spec.has_boxes)
        raise MetricError(
            f"metric {boxed[0]!r} needs bounding boxes and dataset {dataset.name!r} has none; use a dataset with boxes ({with_boxes})"
        )
    fixated = [m for m in metrics if METRICS[m].needs_fixations]
    if fixated and not getattr(dataset, "has_fixations", False):
        with_fixations = ", ".join(name for name, spec in DATASETS.items() if getattr(spec, "has_fixations", False))
        usable = ", ".join(
            name for name, spec in METRICS.items() if not spec.needs_fixations and not spec.needs_boxes and not spec.needs_model
        )
        raise MetricError(
            f"metric {fixated[0]!r} needs eye-tracking fixations and dataset {dataset.name!r} has none; "
            f"use a fixation dataset{f' ({with_fixations})' if with_fixations else ''} or choose --metric among {usable}"
        )
    referenced = [m for m in metrics if METRICS[m].needs_reference]
    if referenced and not dataset.has_reference:
        usable = ", ".join(name for name, spec in METRICS.items() if not spec.needs_reference and not spec.needs_boxes)
        where = f" {dataset.location}" if dataset.location else ""
        raise MetricError(
            f"metric {referenced[0]!r} needs reference maps and the {dataset.name} dataset{where} has none (no heatmaps/ directory); "
            f"add heatmaps/ with one map per image (same stem, same size), or choose --metric among {usable}"
        )


def _result(
    session, run, request, *, method, params, n_images, cached, computed=0, seconds=0.0, weights_source="", device=None
) -> ScoreResult:
    dataset = session.get(Dataset, run.dataset_id)
    n_rows, summaries = q.summarise(session, run.id, request.metrics, max_index=n_images)
    spearman = summaries.get("spearman")
    mean_spearman = spearman.mean if spearman else None
    alignment = mean_spearman / dataset.ceiling if (mean_spearman is not None and dataset.ceiling) else None
    # images with a NULL spearman, or missing altogether, are skipped; never silently lost
    n_scored = spearman.n_scored if spearman else min(s.n_scored for s in summaries.values())
    return ScoreResult(
        run_id=run.id,
        model=request.model.name,
        dcls=request.model.dcls,
        explainer=method,
        explainer_params=params,
        dataset=request.dataset,
        protocol=request.protocol,
        n_images=n_images,
        n_scored=n_scored,
        n_skipped=n_images - n_scored,
        mean_spearman=mean_spearman,
        alignment_score=alignment,
        cached=cached,
        metrics={name: s.mean for name, s in summaries.items()},
        status=shown_status(run.status, pid=run.pid, host=run.host, heartbeat_at=run.heartbeat_at, updated_at=run.updated_at),
        computed_images=computed,
        seconds=seconds,
        weights_source=weights_source,
        device=device,
        ca_stream=request.model.ca_stream,
    )


def _look_up(db: str | None, key: str, request: ScoreRequest, *, n_images: int, **described) -> tuple[ScoreResult | None, frozenset[str]]:
    """(the stored answer, or None when it must be computed; the image ids the run has stored), read
    without creating or upgrading anything.

    A store at an older schema revision is not upgraded to read it: when it holds the answer, the
    StoreOutdated error (naming ``alignbench upgrade``) is raised; when it does not, the computing
    command upgrades it like any store it writes to.
    """
    try:
        store = open_store(db, create=False, migrate=False)
    except StoreMissing:
        return None, frozenset()
    except StoreOutdated:
        if q.stored_rows_of_outdated_store(db, key, max_index=n_images) >= n_images:
            raise
        return None, frozenset()
    with store, store.session() as session:
        run = q.find_run(session, key)
        if run is None:
            return None, frozenset()
        recheck = q.needs_recheck(run)
        if not recheck and q.count_rows(session, run.id, max_index=n_images) >= n_images:
            return _result(session, run, request, n_images=n_images, cached=True, device=run.device, **described), frozenset()
        done = q.scored_image_ids(session, run.id)
        return None, frozenset(done - q.rows_to_recheck(session, run.id) if recheck else done)


def _check_tag(db: str | None, tag: str, fingerprint: str, *, retag: bool) -> None:
    """``--tag`` naming another stored model is refused before anything is written (unless ``--retag``)."""
    try:
        store = open_store(db, create=False, migrate=False)
    except (StoreMissing, StoreOutdated):  # nothing tagged yet, or a store that is upgraded (and checked) as it is written
        return
    with store, store.session() as session:
        q.check_tag(q.tag_owner(session, tag), fingerprint, tag, retag=retag)


def _normalised(request: ScoreRequest) -> ScoreRequest:
    """Metrics sorted without duplicates; the parameters of requested metrics only."""
    metrics = tuple(sorted(set(request.metrics)))
    metric_params = {m: dict(p) for m, p in sorted(request.metric_params.items()) if m in metrics and p}
    return replace(request, metrics=metrics, metric_params=metric_params)


def score(request: ScoreRequest, *, db: str | None = None, progress: ProgressCallback | None = None) -> ScoreResult:
    """Score ``request`` into the store at ``db`` and return the summary over the requested images."""
    _validate(request)
    identity = model_identity(request.model)  # torch-free
    method, params = explainer_setting(request.explainer, **request.explainer_params)
    dataset = open_dataset(request.dataset, request.data_dir, fixation_sigma=request.fixation_sigma)
    if request.metrics is None:  # the dataset's default: on a fixation dataset, the saliency benchmark's metrics
        request = replace(request, metrics=default_metrics(dataset))
    _check_metrics_fit(request.metrics, dataset)
    n_total = len(dataset)
    n_images = min(n_total, request.limit) if request.limit else n_total
    request = _normalised(request)
    run = RunIdentity.of(request, identity, method, params, dataset_fingerprint=dataset.fingerprint)
    described = dict(method=method, params=params, n_images=n_images, weights_source=identity.weights_source)
    tag = request.model.tag if request.model.tag != identity.origin else None  # --tag moco-v3 declares an origin, names nothing
    if tag:
        _check_tag(db, tag, identity.fingerprint, retag=request.retag)

    done: frozenset[str] = frozenset()
    if not request.force:
        cached, done = _look_up(db, run.key, request, **described)
        # under torchrun the ranks decide together, on rank 0's view (below)
        if cached is not None and not launched_ranks().distributed:
            if tag:  # the stored model gets the name asked for (a cached answer writes nothing else)
                q.add_tag(db, identity.fingerprint, tag, retag=request.retag)
            return cached
    # Every file the run will read is checked before the store is written to or the model loaded,
    # so a bad file leaves no run behind (a fixed file changes the dataset's fingerprint: such a run
    # could never be resumed).
    dataset.check_files(dataset.positions(skip_ids=done, limit=n_images))
    model = None
    if not store_exists(db) and not launched_ranks().distributed:
        # a new store is created only for a model that loads: a refused one leaves no empty store behind
        from alignbench.scoring.compute import load_for_scoring  # imports torch

        model = load_for_scoring(request, run, dataset)
    with open_store(db) as store:
        # Under torchrun every rank runs this; all act on rank 0's view of the store (all compute, or
        # all answer from it) and meet once their rows are in (alignbench.distributed).
        ranks = join_launch(request.device)  # alone: SINGLE, and no torch import
        if ranks.distributed:
            with store.session() as session:
                stored = run.find(session)
                complete = stored is not None and not request.force and q.count_rows(session, stored.id, max_index=n_images) >= n_images
                if agree(ranks, complete):
                    stored = stored or run.find(session)
                    return _result(session, stored, request, cached=True, device=stored.device, **described)
        from alignbench.scoring.compute import compute_run  # imports torch: only when something is computed

        start = time.perf_counter()
        run_id, computed, device = compute_run(
            store,
            request,
            identity=run,
            dataset=dataset,
            n_images=n_images,
            progress=progress,
            ranks=ranks,
            model=model,
        )
        computed = all_done(ranks, computed)  # under torchrun: every rank's rows are in, counted over all ranks
        if ranks.distributed and ranks.is_main:
            settle_status(store, run_id)  # each rank set it as it finished; all rows are in now
        with store.session() as session:
            return _result(
                session,
                session.get(Run, run_id),
                request,
                cached=False,
                computed=computed,
                seconds=time.perf_counter() - start,
                device=device,
                **described,
            )


def trained_request(tag: str, db: str | None = None) -> ModelRequest:
    """The request of the model tagged ``tag`` in the store (``score --trained TAG``): what
    ``alignbench train`` recorded, i.e. its model, DCLS recipe and trained checkpoint — after checking
    that the file at the recorded path still holds those weights (its fingerprint is the stored one)."""
    try:
        store = open_store(db, create=False)
    except StoreMissing:
        raise ModelError(f"no store to find --trained {tag!r} in; train a model with `alignbench train ... --tag {tag}` first") from None
    try:
        with store.session() as session:
            rows = q.models_tagged(session, tag)
    finally:
        store.close()
    if not rows:
        raise ModelError(f"no model tagged {tag!r} in {store.url}; `alignbench models --trained` lists the trained ones")
    if not rows[0].request:
        raise ModelError(f"model {tag!r} was recorded without the options that load it; score it with MODEL --checkpoint PATH")
    known = {f.name for f in fields(ModelRequest)}
    request = ModelRequest(**{key: value for key, value in json.loads(rows[0].request).items() if key in known})
    request = replace(request, tag=tag)  # TAG@best and further tags resolve to the model's recorded request
    path = request.stream_checkpoint if request.ca_stream and request.stream_checkpoint else request.checkpoint
    if path is not None and not os.path.isfile(path):
        raise ModelError(f"model {tag!r} was trained into {path}, which no longer exists; restore the file, or train it again")
    recorded, now = rows[0].weights_fingerprint, model_identity(request).fingerprint
    if now != recorded:
        raise ModelError(
            f"{path} no longer holds the model tagged {tag!r} (fingerprint {recorded[:12]} recorded, {now[:12]} in the file now: "
            "it was overwritten); restore the file, or train it again under a new --tag"
        )
    return request

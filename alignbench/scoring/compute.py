"""The compute side of ``score`` (imports torch): load, explain, score, store — batch by batch."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import timm
import torch

from alignbench import __version__
from alignbench._utils.precision import forward_autocast
from alignbench.datasets import data_loader
from alignbench.distributed import SINGLE, Ranks, my_share, rank_device
from alignbench.explainers import check_applicable, explain_batch
from alignbench.metrics import METRICS, metric_function
from alignbench.metrics.constancy import constant_map_reason, mask_undefined
from alignbench.models import load_model, resolve_device
from alignbench.models.specs import get_spec
from alignbench.scoring.centre_bias import score_centre_bias
from alignbench.scoring.identity import RunIdentity
from alignbench.scoring.lifecycle import Heartbeat, mark_running, open_run, settle_status
from alignbench.scoring.request import ScoreRequest
from alignbench.store import Store
from alignbench.store import queries as q
from alignbench.store.recheck import SCORER_REVISION
from alignbench.store.tables import Run


def _versions(device: str) -> dict[str, Any]:
    return {
        "alignbench": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": device,
        "scorer": SCORER_REVISION,
    }


def _targets(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str = "fp32") -> torch.Tensor | None:
    """Dataset labels as explanation targets; an image without a label (-1) is explained for its
    top-1 prediction. All unlabelled: None (the explainer takes the top-1 of its own forward pass);
    a mix: one extra forward pass for the unlabelled ones, in the run's precision."""
    labels = labels.to(images.device, non_blocking=True)
    missing = labels < 0
    if not bool(missing.any()):
        return labels
    if bool(missing.all()):
        return None
    with torch.inference_mode(), forward_autocast(images.device, precision):
        top1 = model(images[missing]).argmax(dim=1)
    labels = labels.clone()
    labels[missing] = top1
    return labels


def _missing_fixations(metric: str, batch: dict[str, Any], i: int) -> str | None:
    """Why ``metric`` is undefined for image ``i`` of a fixation dataset's batch for want of fixations
    (before any reason about the maps: without fixations there is no density either), or None."""
    if "fixations" not in batch or METRICS[metric].needs_model:  # every other metric reads the fixations or their density
        return None
    if len(batch["fixations"][i]) == 0:
        return "the image has no fixations"
    if METRICS[metric].needs_other_fixations and len(batch["other_fixations"][i]) == 0:
        return "no other image has fixations"
    return None


def _why_undefined(metric: str, batch: dict[str, Any], i: int) -> str:
    spec = METRICS[metric]
    if spec.needs_boxes and int(batch["box_counts"][i]) == 0:
        return "the image has no box"
    if spec.needs_fixations or spec.needs_density:
        return "undefined (the map or the fixation density holds NaN or ±inf, or the map is constant)"
    return "undefined (no box inside the image, or the target's probability underflowed)"


def _metric_values(
    metrics: tuple[str, ...],
    maps: torch.Tensor,
    batch: dict[str, Any],
    *,
    model,
    explanation,
    params: dict[str, dict[str, Any]],
    precision: str = "fp32",
) -> tuple[dict[str, torch.Tensor], dict[str, list[str | None]]]:
    """Each requested metric's per-image values for one batch (NaN where undefined), and why a
    value is undefined where a map the metric needs to vary is constant (alignbench.metrics.constancy).
    Metrics that run the model again (faithfulness) run its forward passes in the run's precision, as
    the explanation did, so their probabilities compare like with like; everything else is computed
    in float32/64."""
    values = {}
    for metric in metrics:
        forward = forward_autocast(maps.device, precision) if METRICS[metric].needs_model else contextlib.nullcontext()
        with forward:
            values[metric] = metric_function(metric)(maps, batch, model=model, explanation=explanation, **params.get(metric, {}))
    constant = {"model": constant_map_reason(maps, "the model's map"), "reference": batch["reference_undefined"]}
    return values, mask_undefined(values, constant)


def _on_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """The batch's tensors on ``device``: from the loader's pinned memory, copied without blocking the
    host (the copies overlap the previous batch's work on a GPU). The CPU batch is returned as it is."""
    if device == "cpu":
        return batch
    moved = {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    moved["image"] = batch["image"].to(device, non_blocking=True, memory_format=torch.channels_last)
    return moved


def _stored_ids(store: Store, key: str) -> set[str]:
    with store.session() as session:
        run = q.find_run(session, key)
        return set() if run is None else q.scored_image_ids(session, run.id)


class _Batches:
    """The DataLoaders of one run: its images (less those done, or this rank's positions) through
    the model's preprocessing. Iterating starts the workers decoding."""

    def __init__(self, request: ScoreRequest, dataset: Any, n_images: int, device: str) -> None:
        self.request, self.dataset, self.n_images, self.device = request, dataset, n_images, device

    def __call__(self, preprocessing: Any, done: set[str] | None, positions: list[int] | None = None) -> tuple[int, Any]:
        loader = data_loader(
            self.dataset,
            preprocessing,
            self.request.protocol,
            batch_size=self.request.batch_size,
            num_workers=self.request.workers,  # None: the dataset's default (cores - 1, at most 4)
            skip_ids=frozenset(done or ()),
            limit=self.n_images,
            pin_memory=self.device.startswith("cuda"),
            positions=positions,
        )
        return len(loader.dataset), iter(loader)  # the workers start decoding now


def _start_early(store: Store, request: ScoreRequest, identity: RunIdentity, batches: _Batches, ranks: Ranks) -> tuple | None:
    """When the input preprocessing and the run are known before the model is loaded, the workers
    start first and decode the first batches while it loads (worker start-up and the first decode
    otherwise cost the run time with nothing to overlap them). Not under torchrun: the ranks share
    out the missing images once the run exists. Returns (preprocessing, done, todo, loader) or None."""
    planned = get_spec(request.model.name).preprocessing
    if planned is None or identity.model_fingerprint is None or ranks.distributed:
        return None
    planned_done = set() if request.force else _stored_ids(store, identity.key)
    return (planned, planned_done, *batches(planned, planned_done))


def _load(request: ScoreRequest, identity: RunIdentity, dataset: Any, device: str) -> Any:
    """The model, checked against the dataset and the explainer before any run row exists, made ready to explain."""
    model = load_model(request.model, device=device)
    dataset.check_labels(model.alignbench_info.num_classes)
    check_applicable(model, identity.method, **identity.params)  # e.g. a raw-attention layer it lacks: before any run row
    # NHWC kernels: faster explanations on the CPU (README, Performance: convnext unchanged), same
    # maps to 6e-7; the metrics and the stored values do not change.
    model = model.to(memory_format=torch.channels_last)
    # The explainers need no parameter gradient and eval mode; set once here, the per-batch
    # eval_mode/frozen_parameters guards find nothing to change.
    return model.eval().requires_grad_(False)


def load_for_scoring(request: ScoreRequest, identity: RunIdentity, dataset: Any) -> Any:
    """The model ``compute_run`` would load (on one process), loaded and checked before any store exists."""
    return _load(request, identity, dataset, resolve_device(request.device))


def _open(
    store: Store, request: ScoreRequest, identity: RunIdentity, info: Any, dataset: Any, device: str, ranks: Ranks
) -> tuple[int, set[str]]:
    """(run id, image ids already stored): the run opened and marked running by this process."""
    with store.session(write=True) as session:
        run = open_run(
            session,
            identity,
            model=info.identity,
            dataset=dataset,
            param_count=info.param_count,
            family=info.spec.family,
            retag=request.retag,
        )
        # rows an older scorer wrote may hold a score of a constant map: those are computed again, and
        # the run is stamped with this scorer's revision only once they all are (stamp_scorer)
        recheck = q.needs_recheck(run) and not request.force
        done = set() if request.force or ranks.distributed else q.scored_image_ids(session, run.id)
        if recheck:
            done -= q.rows_to_recheck(session, run.id)
        versions = _versions(device)
        if recheck:
            versions.pop("scorer")
        mark_running(session, run, device=device, versions=versions)
        session.commit()
        return run.id, done, recheck


def _rows(model: Any, batch: dict[str, Any], device: str, request: ScoreRequest, identity: RunIdentity) -> list[dict[str, Any]]:
    """One batch explained and scored: its image rows, with why a metric is undefined where it is."""
    on_device = _on_device(batch, device)
    images = on_device["image"].to(memory_format=torch.channels_last)
    targets = _targets(model, images, on_device["label"], request.precision)
    explanation = explain_batch(model, images, targets, method=identity.method, precision=request.precision, **identity.params)
    scores, constant = _metric_values(
        request.metrics,
        explanation.maps,
        on_device,
        model=model,
        explanation=explanation,
        params=request.metric_params,
        precision=request.precision,
    )
    probabilities = explanation.logits.float().softmax(dim=1)
    confidence, prediction = probabilities.max(dim=1)
    # weights that overflow the forward (huge but finite: a diverged training) give NaN logits, whose
    # argmax is class 0: such an image has no prediction, and no metric of it is defined
    finite = torch.isfinite(explanation.logits).all(dim=1)
    # one device-to-host copy per tensor and batch, not one synchronising read per value
    targets_, predictions_, confidences_ = explanation.targets.tolist(), prediction.tolist(), confidence.tolist()
    finite_ = finite.tolist()
    scores = {metric: values.tolist() for metric, values in scores.items()}
    rows = []
    for i, image_id in enumerate(batch["image_id"]):
        row: dict[str, Any] = {
            "image_index": int(batch["index"][i]),
            "image_id": image_id,
            "target": int(targets_[i]),
            "prediction": int(predictions_[i]) if finite_[i] else None,
            "confidence": float(confidences_[i]) if finite_[i] else None,
        }
        reasons = []
        for metric, values in scores.items():
            value = float(values[i]) if finite_[i] else float("nan")
            row[q.metric_column(metric)] = value
            if not finite_[i]:
                reasons.append(f"{metric}: the model's output holds NaN or ±inf (its weights overflow the forward pass)")
            elif value != value:  # NaN: the metric is undefined for this image (counted as skipped)
                why = _missing_fixations(metric, batch, i) or constant[metric][i] or _why_undefined(metric, batch, i)
                reasons.append(f"{metric}: {why}")
        row["skip_reason"] = "; ".join(reasons) or None
        rows.append(row)
    return rows


def _write_rows(
    store: Store,
    run_id: int,
    loader: Any,
    todo: int,
    model: Any,
    device: str,
    request: ScoreRequest,
    identity: RunIdentity,
    progress: Any,
    *,
    replace: bool = False,
) -> int:
    """Every batch of ``loader`` scored and committed with the run's compute time and heartbeat; returns the rows written."""
    computed = 0
    if progress is not None:
        progress(0, max(0, todo))
    for batch in loader:
        start = time.perf_counter()
        rows = _rows(model, batch, device, request, identity)
        elapsed = time.perf_counter() - start
        with store.session(write=True) as session:
            q.insert_scores(session, run_id, rows, replace=replace)
            q.update_run(session, session.get(Run, run_id), add_seconds=elapsed, heartbeat=True)
            session.commit()
        computed += len(rows)
        if progress is not None:
            progress(computed, max(todo, computed))
    return computed


def compute_run(
    store: Store,
    request: ScoreRequest,
    *,
    identity: RunIdentity,
    dataset: Any,
    n_images: int,
    progress: Any = None,
    ranks: Ranks = SINGLE,
    model: Any = None,
) -> tuple[int, int, str]:
    """Compute the missing rows of the run ``identity``; returns (run id, images computed, device).
    The key is made from the loaded model's fingerprint, which can be more exact than the one known
    before loading (``identity.model_fingerprint``; e.g. hub weights not cached yet). Under torchrun
    (``ranks``), this process computes its share of the missing images only (``alignbench.distributed``).
    ``model``: the model ``load_for_scoring`` loaded already (before a new store was created)."""
    device = rank_device(resolve_device(request.device), ranks)
    batches = _Batches(request, dataset, n_images, device)
    early = _start_early(store, request, identity, batches, ranks) if model is None else None
    if model is None:
        try:
            model = _load(request, identity, dataset, device)
        except BaseException:
            early = None  # stops the workers
            raise
    info = model.alignbench_info
    identity = identity.with_model(info.identity.fingerprint)
    run_id, done, recheck = _open(store, request, identity, info, dataset, device, ranks)

    if ranks.distributed:

        def missing() -> list[int]:
            if request.force:
                return dataset.positions(limit=n_images)
            with store.session() as session:
                return dataset.positions(skip_ids=q.scored_image_ids(session, run_id), limit=n_images)

        todo, loader = batches(info.preprocessing, None, my_share(ranks, missing))
    elif early is not None and early[0] == info.preprocessing and early[1] == done:
        todo, loader = early[2], early[3]
    else:  # the weights' fingerprint or the stored rows changed while loading: start over
        early = None
        todo, loader = batches(info.preprocessing, done)
    heartbeat = Heartbeat(store, run_id).start()
    try:
        computed = _write_rows(store, run_id, loader, todo, model, device, request, identity, progress, replace=request.force or recheck)
        if recheck:
            with store.session(write=True) as session:
                q.stamp_scorer(session, session.get(Run, run_id))
                session.commit()
        # The model-free reference every comparison shows, on the same images: computed once per
        # dataset, protocol and input size (a no-op when stored), so compare/report stay store-only.
        # It is scored against the reference maps: a dataset without them has none.
        if dataset.has_reference:
            score_centre_bias(
                store,
                dataset,
                protocol=request.protocol,
                input_size=info.preprocessing.input_size,
                limit=n_images,
                num_workers=request.workers,
                ranks=ranks,
            )
    finally:
        heartbeat.stop()
        settle_status(store, run_id)
    return run_id, computed, device

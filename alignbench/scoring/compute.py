"""The compute side of ``score`` (imports torch): load, explain, score, store — batch by batch."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from alignbench import __version__
from alignbench.distributed import SINGLE, Ranks, my_share, rank_device
from alignbench._utils.precision import forward_autocast
from alignbench.store import Store
from alignbench.store import queries as q
from alignbench.store.liveness import Heartbeat, this_process


def _versions(device: str) -> dict[str, str]:
    import timm

    return {"alignbench": __version__, "torch": torch.__version__, "timm": timm.__version__, "device": device}


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


def _why_undefined(metric: str, batch: dict[str, Any], i: int) -> str:
    from alignbench.metrics import METRICS

    if METRICS[metric].needs_boxes and int(batch["box_counts"][i]) == 0:
        return "the image has no box"
    return "undefined (no box inside the image, or the target's probability underflowed)"


def _metric_values(
    metrics: tuple[str, ...], maps: torch.Tensor, batch: dict[str, Any], *, model, explanation, params: dict[str, dict[str, Any]],
    precision: str = "fp32",
) -> tuple[dict[str, torch.Tensor], dict[str, list[str | None]]]:
    """Each requested metric's per-image values for one batch (NaN where undefined), and why a
    value is undefined where a map the metric needs to vary is constant (alignbench.metrics.constancy).
    Metrics that run the model again (faithfulness) run its forward passes in the run's precision, as
    the explanation did, so their probabilities compare like with like; everything else is computed
    in float32/64."""
    from alignbench.metrics import METRICS, metric_function
    from alignbench.metrics.constancy import constant_map_reason, mask_undefined

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


def compute_run(
    store: Store,
    request: Any,
    *,
    method: str,
    params: dict[str, Any],
    dataset: Any,
    run_key: Any,
    planned_fingerprint: str | None = None,
    n_images: int,
    progress: Any = None,
    ranks: Ranks = SINGLE,
) -> tuple[int, int, str]:
    """Compute the missing rows of the run ``run_key(weights fingerprint)``; returns (run id, images
    computed, device). The key is made from the loaded model's fingerprint, which can be more exact
    than the one known before loading (``planned_fingerprint``; e.g. hub weights not cached yet).
    Under torchrun (``ranks``), this process computes its share of the missing images only
    (``alignbench.distributed``)."""
    from alignbench.scoring.centre_bias import score_centre_bias
    from alignbench.datasets import data_loader
    from alignbench.explainers import check_applicable, explain_batch
    from alignbench.models import load_model, resolve_device
    from alignbench.models.specs import get_spec

    device = rank_device(resolve_device(request.device), ranks)

    def batches(preprocessing: Any, done: set[str] | None, positions: list[int] | None = None) -> tuple[int, Any]:
        loader = data_loader(
            dataset,
            preprocessing,
            request.protocol,
            batch_size=request.batch_size,
            num_workers=request.workers,  # None: the dataset's default (cores - 1, at most 4)
            skip_ids=frozenset(done or ()),
            limit=n_images,
            pin_memory=device.startswith("cuda"),
            positions=positions,
        )
        return len(loader.dataset), iter(loader)  # the workers start decoding now

    # When the input preprocessing and the run are known before the model is loaded, the workers
    # start first and decode the first batches while it loads (worker start-up and the first
    # decode were 2-4% of a 144-image run, with nothing to overlap them). Not under torchrun: the
    # ranks share out the missing images once the run exists (below).
    planned = get_spec(request.model.name).preprocessing
    early = None
    if planned is not None and planned_fingerprint is not None and not ranks.distributed:
        planned_done = set() if request.force else _stored_ids(store, run_key(planned_fingerprint))
        early = (planned, planned_done, *batches(planned, planned_done))
    try:
        model = load_model(request.model, device=device)
        info = model.alignbench_info
        dataset.check_labels(info.num_classes)
        check_applicable(model, method, **params)  # e.g. a raw-attention layer it lacks: before any run row
    except BaseException:
        early = None  # stops the workers
        raise
    # NHWC kernels: measured 1.46x faster explanations on efficientnet_lite0 and 1.23x on resnet50 on
    # this CPU (convnext unchanged), same maps to 6e-7; the metrics and the stored values do not change.
    model = model.to(memory_format=torch.channels_last)
    # The explainers need no parameter gradient and eval mode; set once here, the per-batch
    # eval_mode/frozen_parameters guards find nothing to change.
    model.eval().requires_grad_(False)
    with store.session(write=True) as session:
        model_row = q.upsert_model(session, info.identity, param_count=info.param_count, family=info.spec.family)
        explainer_row = q.upsert_explainer(session, method, params)
        dataset_row = q.upsert_dataset(
            session, dataset.name, dataset.fingerprint, len(dataset), ceiling=dataset.ceiling,
            location=str(getattr(dataset, "location", "") or "") or None,
        )
        run = q.get_or_create_run(
            session, key=run_key(info.identity.fingerprint), model=model_row, explainer=explainer_row, dataset=dataset_row,
            protocol=request.protocol, metrics=request.metrics, n_images=len(dataset), precision=request.precision,
        )
        run_id = run.id
        done = set() if request.force or ranks.distributed else q.scored_image_ids(session, run_id)
        q.update_run(session, run, status="running", device=device, versions=_versions(device))
        pid, host = this_process()  # readers show the run as interrupted once this process is gone
        q.record_process(session, run, pid=pid, host=host)
        session.commit()

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
    computed = 0
    if progress is not None:
        progress(0, max(0, todo))
    heartbeat = Heartbeat(store, run_id).start()
    try:
        for batch in loader:
            start = time.perf_counter()
            on_device = _on_device(batch, device)
            images = on_device["image"].to(memory_format=torch.channels_last)
            targets = _targets(model, images, on_device["label"], request.precision)
            explanation = explain_batch(model, images, targets, method=method, precision=request.precision, **params)
            scores, constant = _metric_values(
                request.metrics, explanation.maps, on_device, model=model, explanation=explanation, params=request.metric_params,
                precision=request.precision,
            )
            probabilities = explanation.logits.float().softmax(dim=1)
            confidence, prediction = probabilities.max(dim=1)
            # one device-to-host copy per tensor and batch, not one synchronising read per value
            targets_, predictions_, confidences_ = explanation.targets.tolist(), prediction.tolist(), confidence.tolist()
            scores = {metric: values.tolist() for metric, values in scores.items()}
            rows = []
            for i, image_id in enumerate(batch["image_id"]):
                row: dict[str, Any] = {
                    "image_index": int(batch["index"][i]),
                    "image_id": image_id,
                    "target": int(targets_[i]),
                    "prediction": int(predictions_[i]),
                    "confidence": float(confidences_[i]),
                }
                reasons = []
                for metric, values in scores.items():
                    value = float(values[i])
                    row[q.metric_column(metric)] = value
                    if value != value:  # NaN: the metric is undefined for this image (counted as skipped)
                        reasons.append(f"{metric}: {constant[metric][i] or _why_undefined(metric, batch, i)}")
                row["skip_reason"] = "; ".join(reasons) or None
                rows.append(row)
            elapsed = time.perf_counter() - start
            with store.session(write=True) as session:
                q.insert_scores(session, run_id, rows, replace=request.force)
                q.update_run(session, session.get(type(run), run_id), add_seconds=elapsed, heartbeat=True)
                session.commit()
            computed += len(rows)
            if progress is not None:
                progress(computed, max(todo, computed))
        # The model-free reference every comparison shows, on the same images: computed once per
        # dataset, protocol and input size (a no-op when stored), so compare/report stay store-only.
        # It is scored against the reference maps: a dataset without them has none.
        if dataset.has_reference:
            score_centre_bias(
                store, dataset, protocol=request.protocol, input_size=info.preprocessing.input_size,
                limit=n_images, num_workers=request.workers, ranks=ranks,
            )
    finally:
        heartbeat.stop()
        settle_status(store, run_id)
    return run_id, computed, device


def settle_status(store: Store, run_id: int) -> None:
    """complete when the run has a row for every image of its dataset, else partial."""
    from alignbench.store.tables import Run

    with store.session(write=True) as session:
        row = session.get(Run, run_id)
        q.update_run(session, row, status="complete" if q.count_rows(session, run_id) >= row.n_images else "partial")
        session.commit()

"""The compute side of ``score`` (imports torch): load, explain, score, store — batch by batch."""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from alignbench import __version__
from alignbench.errors import DatasetError
from alignbench.store import Store
from alignbench.store import queries as q


def _versions(device: str) -> dict[str, str]:
    import timm

    return {"alignbench": __version__, "torch": torch.__version__, "timm": timm.__version__, "device": device}


def default_workers() -> int:
    # Decoding and preprocessing overlap with the model in worker processes; on a 2-core machine one
    # worker leaves a core to the model. 0 disables workers (debugging, or where fork is unavailable).
    env = os.environ.get("ALIGNBENCH_WORKERS")
    if env is not None:
        return max(0, int(env))
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _targets(labels: torch.Tensor, num_classes: int, image_ids: list[str]) -> torch.Tensor | None:
    """Dataset labels as explanation targets; -1 (no label) means the top-1 prediction."""
    bad = (labels >= num_classes) | (labels < -1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise DatasetError(
            f"image {image_ids[i]}: label {int(labels[i])} is outside the model's {num_classes} classes; "
            "use a model trained on the dataset's classes or fix the labels"
        )
    return labels


def _metric_values(metrics: tuple[str, ...], maps: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Each requested metric's per-image values for one batch (NaN where undefined)."""
    from alignbench.metrics.spearman import spearman

    values = {}
    for metric in metrics:
        if metric == "spearman":
            values[metric] = spearman(maps, batch["reference"].to(maps.device))
        else:
            raise DatasetError(f"metric {metric!r} cannot be computed by this version of the scorer")
    return values


def compute_run(
    store: Store,
    request: Any,
    *,
    identity: Any,
    method: str,
    params: dict[str, Any],
    dataset: Any,
    key: str,
    n_images: int,
    progress: Any = None,
) -> tuple[int, int, str]:
    """Compute the missing rows of the run ``key``; returns (run id, images computed, device)."""
    from torch.utils.data import DataLoader

    from alignbench.explainers import explain_batch
    from alignbench.models import load_model, resolve_device

    device = resolve_device(request.device)
    model = load_model(request.model, dcls=request.dcls, checkpoint=request.checkpoint, device=device)
    info = model.alignbench_info
    with store.session(write=True) as session:
        model_row = q.upsert_model(session, info.identity, param_count=info.param_count, family=info.spec.family)
        explainer_row = q.upsert_explainer(session, method, params)
        dataset_row = q.upsert_dataset(
            session, dataset.name, dataset.fingerprint, len(dataset), ceiling=dataset.ceiling,
            location=str(getattr(dataset, "location", "") or "") or None,
        )
        run = q.get_or_create_run(
            session, key=key, model=model_row, explainer=explainer_row, dataset=dataset_row,
            protocol=request.protocol, metrics=request.metrics, n_images=len(dataset),
        )
        run_id = run.id
        done = set() if request.force else q.scored_image_ids(session, run_id)
        q.update_run(session, run, status="running", device=device, versions=_versions(device))
        session.commit()

    todo = max(0, n_images - len(done))  # images still to score (done may hold ids past --limit: upper bound)
    torch_dataset = dataset.torch_dataset(info.preprocessing, protocol=request.protocol, skip_ids=frozenset(done), limit=n_images)
    workers = request.workers if request.workers is not None else default_workers()
    loader = DataLoader(
        torch_dataset,
        batch_size=request.batch_size,
        num_workers=workers,
        collate_fn=dataset.collate,
        pin_memory=device.startswith("cuda"),
        persistent_workers=False,
    )
    computed = 0
    if progress is not None:
        progress(0, max(0, todo))
    try:
        for batch in loader:
            start = time.perf_counter()
            images = batch["image"].to(device, non_blocking=True)
            labels = _targets(batch["label"], info.num_classes, batch["image_id"])
            explanation = explain_batch(model, images, labels.to(device), method=method, **params)
            scores = _metric_values(request.metrics, explanation.maps, batch)
            probabilities = explanation.logits.float().softmax(dim=1)
            confidence, prediction = probabilities.max(dim=1)
            rows = []
            for i, image_id in enumerate(batch["image_id"]):
                row: dict[str, Any] = {
                    "image_index": int(batch["index"][i]),
                    "image_id": image_id,
                    "target": int(explanation.targets[i]),
                    "prediction": int(prediction[i]),
                    "confidence": float(confidence[i]),
                }
                reasons = []
                for metric, values in scores.items():
                    value = float(values[i])
                    row[metric.replace("-", "_")] = value
                    if value != value:  # NaN: the metric is undefined for this image (counted as skipped)
                        reasons.append(f"{metric}: undefined (constant or non-finite map)")
                row["skip_reason"] = "; ".join(reasons) or None
                rows.append(row)
            elapsed = time.perf_counter() - start
            with store.session(write=True) as session:
                q.insert_scores(session, run_id, rows, replace=request.force)
                q.update_run(session, session.get(type(run), run_id), add_seconds=elapsed)
                session.commit()
            computed += len(rows)
            if progress is not None:
                progress(computed, max(todo, computed))
    finally:
        with store.session(write=True) as session:
            row = session.get(type(run), run_id)
            have = q.count_rows(session, run_id)
            q.update_run(session, row, status="complete" if have >= len(dataset) else "partial")
            session.commit()
    return run_id, computed, device

"""A store of made-up runs, for the compare/report benchmark and tests. Never used on real results.

Shaped like the paper's study: architectures with and without DCLS, one explainer, one dataset, and
the centre-bias reference run; per-image Spearman values are drawn from normals (clipped to [-1, 1])
with a few skipped (NULL) images, so every code path of compare and report is exercised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from alignbench._utils.cache import sha256_text
from alignbench.store import Store
from alignbench.store import queries as q

# the paper's eight architectures: name, family, parameter count (approximate), and a made-up
# baseline mean Spearman (not the paper's results)
PAPER_ARCHITECTURES: tuple[tuple[str, str, int, float], ...] = (
    ("resnet50", "resnet", 25_557_032, 0.30),
    ("convnext_tiny", "convnext", 28_589_128, 0.32),
    ("convnext_small", "convnext", 50_223_688, 0.33),
    ("convnext_base", "convnext", 88_591_464, 0.34),
    ("caformer_s18", "metaformer", 26_340_000, 0.36),
    ("convformer_s18", "metaformer", 26_770_000, 0.35),
    ("fastvit_sa24", "fastvit", 21_550_000, 0.31),
    ("fastvit_sa36", "fastvit", 31_530_000, 0.32),
)


@dataclass(frozen=True)
class SyntheticRun:
    run_id: int
    model: str
    dcls: bool
    method: str


def image_id(index: int) -> str:
    return f"img-{index:06d}"


def model_identity(name: str, *, dcls: bool, checkpoint: str = "") -> SimpleNamespace:
    """What q.upsert_model reads from an alignbench.models.ModelIdentity."""
    return SimpleNamespace(
        name=name,
        dcls=dcls,
        recipe={"dilated_kernel_size": 17, "kernel_count": 34, "version": "v1"} if dcls else None,
        init="checkpoint" if dcls else None,
        weights_source="synthetic",
        fingerprint=sha256_text("synthetic", name, str(dcls), checkpoint),
        checkpoint_sha256=None,
    )


def add_run(
    store: Store,
    *,
    model: str,
    dcls: bool,
    values: Sequence[float] | np.ndarray,
    indices: Sequence[int] | None = None,
    family: str | None = None,
    param_count: int | None = None,
    method: str = "threshold-gradcam",
    params: dict | None = None,
    dataset: str = "clickme-val",
    dataset_fingerprint: str = "synthetic-clickme",
    dataset_size: int | None = None,
    ceiling: float | None = 0.65753,
    protocol: str = "aligned",
    metrics: Sequence[str] = ("spearman",),
    checkpoint: str = "",
    status: str = "complete",
    location: str | None = "synthetic",  # where a real dataset's files are; shown beside its name
    column: str = "spearman",  # the image_score column the values go to (e.g. average_drop)
) -> int:
    """Record one run with one row per value (NaN → a skipped image); returns the run id.

    ``indices`` are the images' positions in the dataset (default 0, 1, ...); image ids are derived
    from them, so runs given the same index hold the same image.
    """
    values = np.asarray(values, dtype=np.float64)
    indices = list(range(len(values))) if indices is None else [int(i) for i in indices]
    params = {"threshold": 0.3} if params is None and method == "threshold-gradcam" else dict(params or {})
    identity = model_identity(model, dcls=dcls, checkpoint=checkpoint)
    with store.session(write=True) as session:
        model_row = q.upsert_model(session, identity, param_count=param_count, family=family)
        explainer = q.upsert_explainer(session, method, params)
        dataset_row = q.upsert_dataset(
            session, dataset, dataset_fingerprint, dataset_size or len(values), ceiling=ceiling, location=location
        )
        key = q.run_key(identity.fingerprint, method, params, dataset_fingerprint, protocol, metrics)
        run = q.get_or_create_run(
            session,
            key=key,
            model=model_row,
            explainer=explainer,
            dataset=dataset_row,
            protocol=protocol,
            metrics=metrics,
            n_images=dataset_row.size,
        )
        rows = [
            {
                "image_index": index,
                "image_id": image_id(index),
                "target": index % 1000,
                "prediction": (index * 7) % 1000,
                "confidence": 0.5,
                column: float(value),
                "skip_reason": "constant map" if not np.isfinite(value) else None,
            }
            for index, value in zip(indices, values)
        ]
        q.insert_scores(session, run.id, rows)
        q.update_run(session, run, status=status)
        session.commit()
        return int(run.id)


def fill_paper_like_store(
    store: Store,
    *,
    n_images: int = 52_000,
    architectures: Sequence[tuple[str, str, int, float]] = PAPER_ARCHITECTURES,
    methods: Sequence[str] = ("threshold-gradcam",),
    centre_bias: bool = True,
    seed: int = 0,
) -> list[SyntheticRun]:
    """Baseline and DCLS runs of every architecture × method, plus the centre-bias reference run."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 0.15, n_images)  # images hard for every model make the pairs correlated
    skipped = rng.random(n_images) < 0.003
    runs: list[SyntheticRun] = []
    for method_index, method in enumerate(methods):
        for name, family, param_count, mean in architectures:
            for dcls in (False, True):
                shift = 0.02 if dcls else 0.0
                values = np.clip(mean + shift - 0.03 * method_index + difficulty + rng.normal(0, 0.15, n_images), -1, 1)
                values[skipped] = np.nan
                run_id = add_run(store, model=name, dcls=dcls, values=values, family=family, param_count=param_count, method=method)
                runs.append(SyntheticRun(run_id, name, dcls, method))
    if centre_bias:
        values = np.clip(0.25 + difficulty + rng.normal(0, 0.1, n_images), -1, 1)
        run_id = add_run(
            store, model="centre-bias", dcls=False, values=values, family="reference", method="centre-bias", params={"sigma_frac": 0.25}
        )
        runs.append(SyntheticRun(run_id, "centre-bias", False, "centre-bias"))
    return runs


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def add_thumbnails(store: Store, needed: dict[int, set[str]], *, side: int = 112, seed: int = 0) -> int:
    """Made-up gallery thumbnails (a textured picture, a blob for each map) for ``needed`` (run id →
    image ids), so the HTML report can be timed and tested on a synthetic store; returns how many
    images got them."""
    from alignbench.store.tables import THUMBNAIL_KINDS

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    rows = []
    for run_id, image_ids in sorted(needed.items()):
        for image_id in sorted(image_ids):
            picture = (rng.random((side, side, 3)) * 64 + np.stack([xx, yy, 1 - xx], axis=-1) * 191).astype(np.uint8)
            kinds = {"image": (_png(picture), None, None)}
            for kind in THUMBNAIL_KINDS[1:]:
                cy, cx, width = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
                high = float(rng.uniform(0.5, 2.0))
                kinds[kind] = (_png(np.rint(255 * (blob - blob.min()) / (blob.max() - blob.min())).astype(np.uint8)), 0.0, high)
            rows += [
                {"run_id": run_id, "image_id": image_id, "kind": kind, "png": png, "vmin": low, "vmax": high}
                for kind, (png, low, high) in kinds.items()
            ]
    with store.session(write=True) as session:
        q.insert_thumbnails(session, rows)
        session.commit()
    return sum(len(ids) for ids in needed.values())


def add_request_run(store: Store, request, dataset, values: Sequence[float] | np.ndarray, *, status: str = "partial") -> int:
    """Record made-up values as the run ``alignbench score`` would make for ``request`` (a
    ScoreRequest) on the opened ``dataset``: the same model, explainer, dataset and run key, so
    ``study status`` and ``score`` find it. Values are the first ``len(values)`` images; returns the run id."""
    from alignbench.explainers import explainer_setting
    from alignbench.models import model_identity
    from alignbench.scoring.identity import RunIdentity

    identity = model_identity(request.model)
    method, params = explainer_setting(request.explainer, **request.explainer_params)
    ids = dataset.image_ids()
    with store.session(write=True) as session:
        run = q.get_or_create_run(
            session,
            key=RunIdentity.of(request, identity, method, params, dataset_fingerprint=dataset.fingerprint).key,
            model=q.upsert_model(session, identity),
            explainer=q.upsert_explainer(session, method, params),
            dataset=q.upsert_dataset(session, dataset.name, dataset.fingerprint, len(dataset), ceiling=dataset.ceiling),
            protocol=request.protocol,
            metrics=request.metrics,
            n_images=len(dataset),
            precision=request.precision,
        )
        rows = [
            {"image_index": i, "image_id": ids[i], "target": 0, "prediction": 0, "confidence": 0.5, "spearman": float(value)}
            for i, value in enumerate(values)
        ]
        for start in range(0, len(rows), 5000):
            q.insert_scores(session, run.id, rows[start : start + 5000])
        q.update_run(session, run, status=status)
        q.stamp_scorer(session, run)  # written as this scorer writes its rows: nothing to re-check
        session.commit()
        return int(run.id)

"""The HTML report's gallery maps, computed once and stored as small thumbnails (imports torch).

For each run and image a gallery shows, the maps are made by the same code path as ``score``: the
model loaded again from the request the store recorded (``model.request``) and checked against the
run's weights fingerprint, the dataset opened again from its stored location and checked against its
fingerprint, the run's preprocessing and protocol through the dataset's own loader, and
``explain_batch`` with the run's explainer setting and the targets the run explained, in batches.
Where the run stored Spearman, each map is scored again against its reference map and must give the
stored value: a map that does not reproduce its score is never shown.

Stored per (run, image), as 8-bit PNGs of at most :data:`THUMBNAIL_SIDE` pixels a side: the model
input (``image``, RGB), the reference map and the explanation (``reference``, ``model``: grey levels
0-255 spanning the map's [vmin, vmax], kept with the row so maps can share a colour scale later).
A dataset without reference maps (a folder without heatmaps/) gets no ``reference`` thumbnail: the
report says it has none rather than show a blank map. A run's thumbnails are stored in one
transaction, so an image with ``image`` and ``model`` but no ``reference`` is such an image.
A run whose model or data is not on this machine gets a one-line reason instead; the report says it.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sqlmodel import select

from alignbench.datasets import data_loader, reopen_dataset
from alignbench.errors import AlignbenchError
from alignbench.explainers import explain_batch
from alignbench.metrics import metric_function
from alignbench.models import ModelRequest, load_model, model_identity, resolve_device
from alignbench.store import Store
from alignbench.store import queries as q
from alignbench.store.tables import Dataset, ExplainerSetting, ImageScore, Model, Run

THUMBNAIL_SIDE = 112  # half the usual 224 input: maps keep their shape, a gallery row stays light
# A recomputed map must reproduce its stored Spearman to this: scoring batches of other sizes and
# thread counts moves ρ by ~1e-7; a different model or image moves it by far more.
SPEARMAN_TOLERANCE = 1e-4

ProgressCallback = Callable[[int, int], None]  # (images done, images to do)


@dataclass
class ThumbnailOutcome:
    """What ``compute_thumbnails`` did: images computed, runs it could not do and why, and where the time went."""

    computed: int = 0
    unavailable: dict[int, str] = field(default_factory=dict)  # run id → why its maps cannot be made here
    seconds: dict[str, float] = field(default_factory=lambda: {"load": 0.0, "explain": 0.0, "other": 0.0})


@dataclass(frozen=True)
class _RunInputs:
    run_id: int
    request: Any  # ModelRequest
    fingerprint: str
    method: str
    params: dict[str, Any]
    protocol: str
    dataset: Any  # an opened alignbench dataset
    metrics: tuple[str, ...]


def _inputs(store: Store, run_id: int) -> _RunInputs:
    """Everything needed to make a run's maps again, checked without torch; AlignbenchError saying why not."""
    with store.session() as session:
        run = session.get(Run, run_id)
        model = session.get(Model, run.model_id)
        explainer = session.get(ExplainerSetting, run.explainer_id)
        dataset = session.get(Dataset, run.dataset_id)
    if not model.request:
        raise AlignbenchError(
            f"the store does not say how to load {model.name} (scored before alignbench recorded model requests); "
            "score it again to record it"
        )
    try:
        request = ModelRequest(**json.loads(model.request))
    except TypeError as error:
        raise AlignbenchError(f"model {model.name} was recorded by a newer alignbench ({error})") from None
    identity = model_identity(request)
    if identity.fingerprint != model.weights_fingerprint:
        raise AlignbenchError(
            f"the weights of {model.name} here ({identity.weights_source}) are not the ones run {run_id} used "
            f"(fingerprint {identity.fingerprint[:12]}, stored {model.weights_fingerprint[:12]})"
        )
    if not identity.weights_on_disk:
        raise AlignbenchError(f"the weights of {model.name} are not on this machine ({identity.weights_source})")
    opened = reopen_dataset(dataset.name, dataset.location, dataset.fingerprint)
    return _RunInputs(
        run_id,
        request,
        model.weights_fingerprint,
        explainer.method,
        json.loads(explainer.params or "{}"),
        run.protocol,
        opened,
        tuple(run.metrics.split(",")),
    )


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _thumbnail_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, THUMBNAIL_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def map_thumbnails(maps: torch.Tensor) -> list[tuple[bytes, float, float]]:
    """[B, H, W] float maps → (grey PNG, vmin, vmax) each: antialiased bilinear down to the thumbnail
    size, then 0..255 over the map's own range (a constant or empty map: all 0)."""
    size = _thumbnail_size(*maps.shape[-2:])
    small = F.interpolate(maps.float()[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)[:, 0]
    out = []
    for one in small.cpu().numpy().astype(np.float64):
        finite = one[np.isfinite(one)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scaled = (np.nan_to_num(one, nan=low, posinf=high, neginf=low) - low) / (high - low) if high > low else np.zeros_like(one)
        out.append((_png(np.rint(scaled * 255.0).astype(np.uint8)), low, high))
    return out


def image_thumbnails(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> list[bytes]:
    """Normalised model inputs [B, 3, H, W] → RGB PNGs of the picture the model saw (un-normalised)."""
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    pictures = (images.float().cpu() * std_t + mean_t).clamp(0.0, 1.0)
    size = _thumbnail_size(*pictures.shape[-2:])
    small = F.interpolate(pictures, size=size, mode="bilinear", align_corners=False, antialias=True)
    rgb = (small * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [_png(np.ascontiguousarray(one)) for one in rgb]


def _stored_rows(store: Store, run_id: int, image_ids: Collection[str]) -> dict[str, tuple[int | None, float | None]]:
    """image id → (the class the run explained, its stored Spearman)."""
    with store.session() as session:
        statement = select(ImageScore.image_id, ImageScore.target, ImageScore.spearman).where(
            ImageScore.run_id == run_id,
            ImageScore.image_id.in_(sorted(image_ids)),  # type: ignore[attr-defined]
        )
        return {image_id: (target, spearman) for image_id, target, spearman in session.exec(statement).all()}


def _run_thumbnails(
    store: Store,
    inputs: _RunInputs,
    image_ids: Collection[str],
    model: torch.nn.Module,
    device: str,
    batch_size: int,
    outcome: ThumbnailOutcome,
    progress: Callable[[int], None],
) -> list[dict[str, Any]]:
    dataset = inputs.dataset
    info = model.alignbench_info
    stored = _stored_rows(store, inputs.run_id, image_ids)
    wanted = [image_id for image_id in image_ids if image_id in stored]
    positions = {image_id: i for i, image_id in enumerate(dataset.image_ids())}
    missing = [image_id for image_id in wanted if image_id not in positions]
    if missing:
        raise AlignbenchError(f"image {missing[0]} of run {inputs.run_id} is not in dataset {dataset.name} here")
    if any(stored[image_id][0] is None for image_id in wanted):
        raise AlignbenchError(f"run {inputs.run_id} stored no target class for some images")
    keep = set(wanted)
    loader = data_loader(
        dataset,
        info.preprocessing,
        inputs.protocol,
        batch_size=batch_size,
        num_workers=0,
        skip_ids=frozenset(i for i in positions if i not in keep),
        limit=max(positions[i] for i in wanted) + 1,
        reference_ranks=False,
    )
    rows: list[dict[str, Any]] = []
    worst = 0.0
    for batch in loader:
        start = time.perf_counter()
        images = batch["image"].to(device, memory_format=torch.channels_last)
        targets = torch.tensor([stored[i][0] for i in batch["image_id"]], dtype=torch.long, device=device)
        explanation = explain_batch(model, images, targets, inputs.method, **inputs.params)
        maps = explanation.maps.float().cpu()
        outcome.seconds["explain"] += time.perf_counter() - start
        if "spearman" in inputs.metrics:  # never on a dataset without reference maps (score refuses it)
            # as score computed it: on a fixation dataset at the stimulus size, against the fixation density
            again = metric_function("spearman")(maps, batch).double().numpy()
            was = np.array([np.nan if stored[i][1] is None else stored[i][1] for i in batch["image_id"]])
            if not np.array_equal(np.isnan(again), np.isnan(was)):
                raise AlignbenchError(f"the maps computed here for run {inputs.run_id} do not reproduce its skipped images")
            worst = max(worst, float(np.nanmax(np.abs(again - was), initial=0.0)))
        references = map_thumbnails(batch["reference"]) if dataset.has_reference else [None] * len(batch["image_id"])
        for image_id, picture, reference, explained in zip(
            batch["image_id"],
            image_thumbnails(batch["image"], info.preprocessing.mean, info.preprocessing.std),
            references,
            map_thumbnails(maps),
        ):
            base = {"run_id": inputs.run_id, "image_id": image_id}
            rows.append({**base, "kind": "image", "png": picture, "vmin": None, "vmax": None})
            if reference is not None:
                rows.append({**base, "kind": "reference", "png": reference[0], "vmin": reference[1], "vmax": reference[2]})
            rows.append({**base, "kind": "model", "png": explained[0], "vmin": explained[1], "vmax": explained[2]})
        progress(len(batch["image_id"]))
    if worst > SPEARMAN_TOLERANCE:
        raise AlignbenchError(
            f"the maps computed here for run {inputs.run_id} do not reproduce its stored Spearman (max |Δρ| = {worst:.2g}); "
            "the model, the data or alignbench changed since it was scored"
        )
    return rows


def _load(inputs: _RunInputs, device: str, outcome: ThumbnailOutcome) -> torch.nn.Module:
    """The run's model as the scorer runs it (NHWC, eval mode, no parameter gradients); AlignbenchError
    with the loader's own words where it cannot be loaded here (a checkpoint that no longer fits, ...)."""
    start = time.perf_counter()
    try:
        model = load_model(inputs.request, device=device)
    except (OSError, RuntimeError, ValueError) as error:
        first_line = (str(error).splitlines() or [""])[0]
        raise AlignbenchError(f"{inputs.request.name} cannot be loaded here: {type(error).__name__}: {first_line}") from None
    outcome.seconds["load"] += time.perf_counter() - start
    if model.alignbench_info.identity.fingerprint != inputs.fingerprint:
        raise AlignbenchError(f"the model loaded here is not the one run {inputs.run_id} used (its weights changed)")
    return model.to(memory_format=torch.channels_last).eval().requires_grad_(False)


def compute_thumbnails(
    store: Store,
    needed: Mapping[int, Collection[str]],
    *,
    device: str = "auto",
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
) -> ThumbnailOutcome:
    """Compute and store the thumbnails of ``needed`` (run id → image ids); one model loaded at a time.

    A run whose model, weights or dataset are not here, or whose maps do not reproduce its stored
    scores, is left out with its reason in ``unavailable``; nothing of it is stored.
    """
    outcome = ThumbnailOutcome()
    started = time.perf_counter()
    total = sum(len(ids) for ids in needed.values())
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    advance(0)
    device = resolve_device(device)
    loaded: tuple[str, torch.nn.Module] | None = None  # runs of one model (several explainers) load it once
    for run_id, image_ids in sorted(needed.items()):
        run_end = done + len(image_ids)
        try:
            inputs = _inputs(store, run_id)
            if loaded is None or loaded[0] != inputs.fingerprint:
                loaded = None  # free the previous model first
                loaded = (inputs.fingerprint, _load(inputs, device, outcome))
            rows = _run_thumbnails(store, inputs, image_ids, loaded[1], device, batch_size, outcome, advance)
        except AlignbenchError as error:  # a model or data that cannot be had here: say why, go on
            outcome.unavailable[run_id] = error.message
        else:
            with store.session(write=True) as session:
                q.insert_thumbnails(session, rows)
                session.commit()
            outcome.computed += sum(row["kind"] == "image" for row in rows)
        advance(run_end - done)
    outcome.seconds["other"] = time.perf_counter() - started - outcome.seconds["load"] - outcome.seconds["explain"]
    return outcome

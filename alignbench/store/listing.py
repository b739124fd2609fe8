"""What the store holds, read (and runs deleted) with SQLAlchemy Core alone.

``alignbench runs list`` and the comparisons need one joined query over runs, models, explainer
settings and datasets; importing SQLModel's ORM for it cost more than the rest of the command
(``import sqlmodel`` about twice SQLAlchemy Core's import; README, Performance). The columns these queries read
are named below as lightweight Core tables; ``tests/store/test_store_modules.py`` holds them to
``alignbench.store.tables``, which stays the schema's one definition (alembic targets it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, LargeBinary, String, column, delete, func, select, table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeDecorator

from alignbench.store.liveness import shown_status


class UTCDateTime(TypeDecorator):
    """A stored time read as SQLModel reads it (``sqlmodel.sql.sqltypes.UTCDateTime``): aware, in UTC
    (SQLite stores UTC without an offset)."""

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.utcoffset() is None else value.astimezone(timezone.utc)


run = table(
    "run",
    column("id", Integer),
    column("model_id", Integer),
    column("explainer_id", Integer),
    column("dataset_id", Integer),
    column("protocol", String),
    column("metrics", String),
    column("status", String),
    column("n_images", Integer),
    column("updated_at", UTCDateTime),
    column("pid", Integer),
    column("host", String),
    column("heartbeat_at", UTCDateTime),
    column("precision", String),
    column("device", String),
    column("compute_seconds", Float),
    column("created_at", UTCDateTime),
)
model = table(
    "model",
    column("id", Integer),
    column("name", String),
    column("family", String),
    column("dcls", Boolean),
    column("recipe", String),
    column("param_count", Integer),
    column("weights_fingerprint", String),
    column("tag", String),
    column("origin", String),
    column("parent_id", Integer),
    column("ca_stream", Boolean),
    column("request", String),
    column("weights_source", String),
    column("init", String),
)
explainer_setting = table("explainer_setting", column("id", Integer), column("method", String), column("params", String))
dataset = table(
    "dataset",
    column("id", Integer),
    column("name", String),
    column("fingerprint", String),
    column("ceiling", Float),
    column("location", String),
    column("size", Integer),
)
METRIC_COLUMNS: tuple[str, ...] = (
    "spearman",
    "pointing_game",
    "stochastic_pointing_game",
    "energy_in_box",
    "deletion",
    "insertion",
    "average_drop",
    "average_increase",
    "average_gain",
    # the saliency benchmark's fixation metrics (migration 0004)
    "nss",
    "auc_judd",
    "auc_borji",
    "sauc",
    "cc",
    "kl",
    "sim",
    "ig",
)
"""Per-image metric columns of image_score; a metric named ``a-b`` is stored in column ``a_b``."""

image_score = table(
    "image_score",
    column("run_id", Integer),
    column("image_index", Integer),
    column("image_id", String),
    column("target", Integer),
    column("prediction", Integer),
    column("confidence", Float),
    *(column(name, Float) for name in METRIC_COLUMNS),
    column("skip_reason", String),
)
thumbnail = table(
    "thumbnail",
    column("run_id", Integer),
    column("image_id", String),
    column("kind", String),
    column("png", LargeBinary),
    column("vmin", Float),
    column("vmax", Float),
)
THUMBNAIL_KINDS: tuple[str, ...] = ("image", "reference", "model")
"""What the HTML report stores per (run, image) for its galleries (the centre-bias map is drawn, not stored)."""


@dataclass(frozen=True)
class ThumbnailRow:
    """One stored thumbnail: an 8-bit PNG of a picture or map; a map's grey levels span [vmin, vmax]."""

    run_id: int
    image_id: str
    kind: str
    png: bytes
    vmin: float | None
    vmax: float | None


def stored_thumbnails(connection: Connection, run_ids: Sequence[int]) -> set[tuple[int, str, str]]:
    """Which (run, image, kind) thumbnails the store holds for these runs (keys only, no bytes)."""
    if not run_ids:
        return set()
    t = thumbnail.c
    statement = select(t.run_id, t.image_id, t.kind).where(t.run_id.in_(sorted({int(r) for r in run_ids})))
    return {(int(run_id), image_id, kind) for run_id, image_id, kind in connection.execute(statement)}


def read_thumbnails(connection: Connection, run_id: int, image_ids: Sequence[str]) -> dict[tuple[str, str], ThumbnailRow]:
    """(image id, kind) → thumbnail of one run's images."""
    ids = sorted(set(image_ids))
    if not ids:
        return {}
    t = thumbnail.c
    statement = select(t.run_id, t.image_id, t.kind, t.png, t.vmin, t.vmax).where(t.run_id == run_id, t.image_id.in_(ids))
    return {
        (row.image_id, row.kind): ThumbnailRow(int(row.run_id), row.image_id, row.kind, bytes(row.png), row.vmin, row.vmax)
        for row in connection.execute(statement)
    }


def metric_column(metric: str) -> str:
    """The image_score column of a metric: ``pointing-game`` → ``pointing_game``."""
    name = metric.replace("-", "_")
    if name not in METRIC_COLUMNS:
        raise KeyError(f"metric {metric!r} has no column in image_score")
    return name


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces (settings and recipes are compared as text)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class RunView:
    """A run with the names compare/report show, from one joined query."""

    run_id: int
    model: str
    family: str | None
    dcls: bool
    recipe: str | None
    param_count: int | None
    weights_fingerprint: str
    method: str
    params: str
    dataset: str
    dataset_fingerprint: str
    ceiling: float | None
    protocol: str
    metrics: str
    status: str  # as stored, except a running run whose process is gone: interrupted (alignbench.store.liveness)
    n_images: int
    updated_at: Any
    dataset_location: str | None = None  # where the dataset's files were read (a folder, a shard directory)
    # lineage (migration 0003): which model row, its name in the store, how it was made, from which model
    model_id: int | None = None
    tag: str | None = None
    origin: str | None = None
    parent_id: int | None = None
    ca_stream: bool = False  # the model pools with a CA-Stream (not the architecture's baseline)


def list_runs(
    connection: Connection, *, dataset_name: str | None = None, method: str | None = None, protocol: str | None = None
) -> list[RunView]:
    """Every run (of one dataset, explainer method or protocol when given), by id."""
    statement = (
        select(
            run.c.id,
            run.c.protocol,
            run.c.metrics,
            run.c.status,
            run.c.pid,
            run.c.host,
            run.c.heartbeat_at,
            run.c.updated_at,
            run.c.n_images,
            model.c.id.label("model_id"),
            model.c.name.label("model"),
            model.c.family,
            model.c.dcls,
            model.c.recipe,
            model.c.param_count,
            model.c.weights_fingerprint,
            model.c.tag,
            model.c.origin,
            model.c.parent_id,
            model.c.ca_stream,
            explainer_setting.c.method,
            explainer_setting.c.params,
            dataset.c.name.label("dataset"),
            dataset.c.fingerprint.label("dataset_fingerprint"),
            dataset.c.ceiling,
            dataset.c.location,
        )
        .select_from(
            run.join(model, model.c.id == run.c.model_id)
            .join(explainer_setting, explainer_setting.c.id == run.c.explainer_id)
            .join(dataset, dataset.c.id == run.c.dataset_id)
        )
        .order_by(run.c.id)
    )
    if dataset_name is not None:
        statement = statement.where(dataset.c.name == dataset_name)
    if method is not None:
        statement = statement.where(explainer_setting.c.method == method)
    if protocol is not None:
        statement = statement.where(run.c.protocol == protocol)
    return [
        RunView(
            run_id=row.id,
            model=row.model,
            family=row.family,
            dcls=row.dcls,
            recipe=row.recipe,
            param_count=row.param_count,
            weights_fingerprint=row.weights_fingerprint,
            method=row.method,
            params=row.params,
            dataset=row.dataset,
            dataset_fingerprint=row.dataset_fingerprint,
            ceiling=row.ceiling,
            protocol=row.protocol,
            metrics=row.metrics,
            status=shown_status(row.status, pid=row.pid, host=row.host, heartbeat_at=row.heartbeat_at, updated_at=row.updated_at),
            n_images=row.n_images,
            updated_at=row.updated_at,
            dataset_location=row.location,
            model_id=row.model_id,
            tag=row.tag,
            origin=row.origin,
            parent_id=row.parent_id,
            ca_stream=row.ca_stream,
        )
        for row in connection.execute(statement)
    ]


def row_counts(connection: Connection, run_ids: Sequence[int]) -> dict[int, int]:
    """Rows (images with a row, scored or skipped) per run; counted on the (run, image) index alone."""
    statement = select(image_score.c.run_id, func.count()).where(image_score.c.run_id.in_(list(run_ids))).group_by(image_score.c.run_id)
    counts = {int(run_id): 0 for run_id in run_ids}
    counts.update({int(run_id): int(n) for run_id, n in connection.execute(statement)})
    return counts


def delete_runs(connection: Connection, run_ids: Sequence[int]) -> int:
    """Delete runs with their rows and thumbnails (rows first, in the caller's transaction); returns
    the image rows deleted. Thumbnails would cascade; they are deleted explicitly so that no backend
    depends on its foreign-key settings."""
    ids = list(run_ids)
    rows = connection.execute(delete(image_score).where(image_score.c.run_id.in_(ids))).rowcount
    connection.execute(delete(thumbnail).where(thumbnail.c.run_id.in_(ids)))
    connection.execute(delete(run).where(run.c.id.in_(ids)))
    return int(rows or 0)

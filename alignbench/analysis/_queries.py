"""Read-only queries that compare and report need beyond alignbench.store.queries (candidates to move there).

Speed matters here: ``compare`` and ``report`` read every per-image value of up to a million rows
and must answer in well under two seconds. Each function is one SQL statement built with SQLAlchemy
Core (so it runs on any backend) on the Core tables of ``alignbench.store.listing``: reading never
imports SQLModel's ORM, whose import alone cost more than the rest of ``compare`` (README,
Performance). They take a Core connection or a session (``connection_of``). The per-image fetch goes
through the DBAPI cursor straight into numpy, about 1.5 times faster than materialising rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from alignbench.store import listing
from alignbench.store.listing import image_score, metric_column

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.orm import Session

Reader = Union[Connection, "Session"]
"""What the read functions take: a Core connection (compare, report) or a session (its connection is used)."""


def connection_of(db: Reader) -> Connection:
    """The Core connection to read with: ``db`` itself, or the session's connection (its transaction)."""
    return db if isinstance(db, Connection) else db.connection()


@dataclass(frozen=True)
class ImageValues:
    """One run's scored images (metric not NULL), ordered by image index."""

    index: np.ndarray  # int64 image_index: the image's position in its dataset (see per_image_values)
    value: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.index.size)


EMPTY_VALUES = ImageValues(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))


def per_image_values(db: Reader, run_ids: Sequence[int], metric: str) -> dict[int, ImageValues]:
    """run id → its scored images' (image index, value) arrays, one query per run.

    Images are keyed by ``image_index`` rather than ``image_id``: runs are only ever joined within
    one dataset fingerprint, where the index is the image's fixed position, and integers transfer
    and join much faster than strings.
    """
    run_ids = sorted({int(r) for r in run_ids})
    column = image_score.c[metric_column(metric)]
    connection = connection_of(db)
    cursor = connection.connection.cursor()
    out = {}
    try:
        # One statement per run: two columns per row instead of three leave less to convert in
        # Python's sqlite3, the slow part (figures in the README, Performance).
        for run_id in run_ids:
            statement = select(image_score.c.image_index, column).where(image_score.c.run_id == run_id, column.is_not(None))
            # The only literal is the integer run id, so inlining it is safe; it lets the raw DBAPI
            # cursor run the statement without knowing this dialect's parameter style.
            cursor.execute(str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})))
            rows = np.fromiter(cursor, dtype=[("index", np.int64), ("value", np.float64)])
            index, value = rows["index"], rows["value"]
            if index.size > 1 and not (index[1:] > index[:-1]).all():
                order = np.argsort(index, kind="stable")
                index, value = index[order], value[order]
            out[run_id] = ImageValues(np.ascontiguousarray(index), np.ascontiguousarray(value)) if index.size else EMPTY_VALUES
    finally:
        cursor.close()
    return out


@dataclass(frozen=True)
class WorstImage:
    image_index: int
    image_id: str
    target: int | None
    prediction: int | None
    confidence: float | None
    value: float


def worst_images(db: Reader, run_id: int, metric: str, n: int, *, higher_is_better: bool = True) -> list[WorstImage]:
    """The ``n`` scored images of a run with the worst metric value (ties: lower index first)."""
    s = image_score.c
    column = s[metric_column(metric)]
    statement = (
        select(s.image_index, s.image_id, s.target, s.prediction, s.confidence, column)
        .where(s.run_id == run_id, column.is_not(None))
        .order_by(column.asc() if higher_is_better else column.desc(), s.image_index)
        .limit(n)
    )
    return [
        WorstImage(int(index), image_id, target, prediction, confidence, float(value))
        for index, image_id, target, prediction, confidence, value in connection_of(db).execute(statement).all()
    ]


@dataclass(frozen=True)
class ImageRow:
    """One stored image of one run, as the HTML report's galleries and per-image tables show it."""

    image_index: int
    image_id: str
    target: int | None
    prediction: int | None
    confidence: float | None
    value: float | None  # the metric under study; None: skipped
    skip_reason: str | None


def _image_rows_statement(run_id: int, metric: str):
    s = image_score.c
    return select(s.image_index, s.image_id, s.target, s.prediction, s.confidence, s[metric_column(metric)], s.skip_reason).where(
        s.run_id == run_id
    )


def image_rows(
    db: Reader, run_id: int, metric: str, indices: Sequence[int] | None = None, *, image_ids: Sequence[str] | None = None
) -> list[ImageRow]:
    """A run's rows (those at ``indices``, or of ``image_ids``, when given), by image index.

    By ``image_ids`` is the fast way: (run, image id) is the table's unique index, while a
    selection by index reads every row of the run.
    """
    statement = _image_rows_statement(run_id, metric)
    if image_ids is not None:
        if not image_ids:
            return []
        statement = statement.where(image_score.c.image_id.in_(sorted(set(image_ids))))
    elif indices is not None:
        if not indices:
            return []
        statement = statement.where(image_score.c.image_index.in_(sorted({int(i) for i in indices})))
    rows = [
        ImageRow(int(index), image_id, target, prediction, confidence, None if value is None else float(value), reason)
        for index, image_id, target, prediction, confidence, value, reason in connection_of(db).execute(statement).all()
    ]
    return sorted(rows, key=lambda row: row.image_index)


def metric_means(db: Reader, run_ids: Sequence[int], metric: str) -> dict[int, tuple[float | None, int]]:
    """run id → (mean of the metric over its non-NULL rows, how many), one grouped query."""
    if not run_ids:
        return {}
    column = image_score.c[metric_column(metric)]
    statement = (
        select(image_score.c.run_id, func.avg(column), func.count(column))
        .where(image_score.c.run_id.in_(sorted(set(run_ids))))
        .group_by(image_score.c.run_id)
    )
    return {int(run_id): (None if mean is None else float(mean), int(n)) for run_id, mean, n in connection_of(db).execute(statement).all()}


@dataclass(frozen=True)
class RunDetails:
    """What the HTML report says about a run beyond ``RunView``: how its model loads, where its data is."""

    run_id: int
    model_request: str | None  # canonical JSON of the ModelRequest (NULL: stored before requests were recorded)
    weights_source: str
    init: str | None
    tag: str | None
    origin: str | None
    dataset_location: str | None
    dataset_size: int
    precision: str
    device: str | None
    compute_seconds: float
    created_at: object
    updated_at: object


def run_details(db: Reader, run_ids: Sequence[int]) -> dict[int, RunDetails]:
    if not run_ids:
        return {}
    r, m, d = listing.run.c, listing.model.c, listing.dataset.c
    statement = (
        select(
            r.id,
            m.request,
            m.weights_source,
            m.init,
            m.tag,
            m.origin,
            d.location,
            d.size,
            r.precision,
            r.device,
            r.compute_seconds,
            r.created_at,
            r.updated_at,
        )
        .select_from(listing.run.join(listing.model, m.id == r.model_id).join(listing.dataset, d.id == r.dataset_id))
        .where(r.id.in_(sorted({int(i) for i in run_ids})))
    )
    return {
        int(row.id): RunDetails(
            int(row.id),
            row.request,
            row.weights_source,
            row.init,
            row.tag,
            row.origin,
            row.location,
            int(row.size),
            row.precision,
            row.device,
            float(row.compute_seconds or 0.0),
            row.created_at,
            row.updated_at,
        )
        for row in connection_of(db).execute(statement)
    }

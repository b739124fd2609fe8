"""``alignbench merge SRC... --into DST``: union stores made on machines that share no server.

Everything is matched by identity, never by row id (ids differ from store to store):

- a model by its weights fingerprint, an explainer setting by method and parameters, a dataset by
  name and content fingerprint: one row each in DST, whichever store had it first;
- a run by its key (the hash of exactly those inputs, protocol, metric set and precision);
- an image row by (run, image id), a thumbnail by (run, image id, kind).

Rows DST lacks are added. A row both have with the same values (floats within ``TOLERANCE``) is
left alone, so merging twice changes nothing. A row both have with different values is a conflict:
listed, and DST's row kept unless ``prefer="newer"``, which keeps whichever row was created later.
Each source is merged in one transaction: a failure leaves DST as it was. Sources are only read
(SQLite files are opened read-only), and are read as they are: a source at an older schema
revision is read column by column (what it lacks gets DST's defaults); one from a newer alignbench
is refused, as is DST itself when it is newer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, func, inspect, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DatabaseError, OperationalError

from alignbench.errors import StoreError
from alignbench.store.engine import _server_message, create_store_engine, open_store
from alignbench.store.migrate import current_revision, revisions, unknown_revision
from alignbench.store.tables import METRIC_COLUMNS, Dataset, ExplainerSetting, ImageScore, Model, Run, Thumbnail
from alignbench.store.urls import display_url, resolve_url

TOLERANCE = 1e-6  # two stored floats closer than this are the same value (CPU vs GPU rounding)
PREFER = ("into", "newer")
_IMAGE_VALUES = ("image_index", "target", "prediction", "confidence", *METRIC_COLUMNS, "skip_reason")
_THUMBNAIL_VALUES = ("png", "vmin", "vmax")
_BATCH = 2000  # rows per INSERT statement


@dataclass(frozen=True)
class Conflict:
    """One (run, image) both stores have, with different values."""

    source: str
    run_key: str
    run_id: int  # in DST
    model: str
    image_id: str
    kind: str  # "score" or "thumbnail:<kind>"
    columns: tuple[str, ...]  # the columns that differ
    kept: dict[str, Any]  # the differing values kept in DST
    other: dict[str, Any]  # the differing values of the other row
    replaced: bool  # True: the other (newer) row replaced DST's

    def to_json(self) -> dict[str, Any]:
        def plain(values: dict[str, Any]) -> dict[str, Any]:
            return {k: (f"<{len(v)} bytes>" if isinstance(v, (bytes, memoryview)) else v) for k, v in values.items()}

        return {**self.__dict__, "columns": list(self.columns), "kept": plain(self.kept), "other": plain(self.other)}


@dataclass
class SourceMerge:
    """What merging one source did to DST."""

    source: str
    revision: str
    models: int = 0
    explainers: int = 0
    datasets: int = 0
    runs: int = 0  # runs DST did not have
    runs_matched: int = 0  # runs both had (their rows unioned)
    rows: int = 0  # image rows added
    rows_same: int = 0  # image rows both had, equal
    thumbnails: int = 0
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def replaced(self) -> int:
        return sum(c.replaced for c in self.conflicts)

    @property
    def changed(self) -> bool:
        return bool(self.models or self.explainers or self.datasets or self.runs or self.rows or self.thumbnails or self.replaced)


@dataclass
class MergeResult:
    into: str
    prefer: str
    sources: list[SourceMerge]

    @property
    def conflicts(self) -> list[Conflict]:
        return [c for s in self.sources for c in s.conflicts]

    @property
    def unresolved(self) -> int:
        return sum(not c.replaced for c in self.conflicts)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOLERANCE
    if isinstance(a, memoryview):
        a = bytes(a)
    if isinstance(b, memoryview):
        b = bytes(b)
    return a == b


def _read_only_engine(url: str) -> Engine:
    """An engine that can only read ``url`` (a URL or a SQLite file path): SQLite files opened
    read-only as every reading command opens them (no journal-mode switch, no migration, readable in
    a read-only directory), any other database as it is (merge only SELECTs from it)."""
    sa_url = make_url(resolve_url(url))
    if sa_url.get_backend_name() == "sqlite":
        path = Path(sa_url.database or "")
        if not sa_url.database or sa_url.database == ":memory:" or not path.is_file():
            raise StoreError(f"no store at {path if sa_url.database else url}; pass an existing alignbench store to merge")
    return create_store_engine(resolve_url(url), create=False, read_only=True)


def _source_revision(engine: Engine, url: str) -> str:
    try:
        revision = current_revision(engine)
        has_tables = bool(inspect(engine).get_table_names())
    except DatabaseError as error:
        reason = str(getattr(error, "orig", error)).strip()
        if engine.dialect.name != "sqlite" and isinstance(error, OperationalError):
            raise StoreError(_server_message(url, engine.url, reason)) from None
        raise StoreError(f"cannot read store {display_url(url)}: {' '.join(reason.split())}") from None
    if revision is None:
        what = "is not an alignbench store (no schema revision)" if has_tables else "is empty"
        raise StoreError(f"{display_url(url)} {what}; nothing to merge")
    if revision not in revisions():
        raise StoreError(
            unknown_revision(
                display_url(url),
                revision,
                newer_advice="merge with that alignbench, or upgrade this one",
                other_advice="leave it out of the merge, or restore it from a backup",
            )
        )
    return revision


class _Source:
    """A source store's tables as reflected (an older revision has fewer columns, or no thumbnail table)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.metadata = MetaData()
        names = set(inspect(connection).get_table_names())
        self.metadata.reflect(
            bind=connection, only=[n for n in ("model", "explainer_setting", "dataset", "run", "image_score", "thumbnail") if n in names]
        )

    def table(self, name: str) -> Table | None:
        return self.metadata.tables.get(name)

    def rows(self, name: str, *where: Any) -> list[dict[str, Any]]:
        table = self.table(name)
        if table is None:
            return []
        statement = select(table)
        for condition in where:
            statement = statement.where(condition(table))
        return [{k: _utc(v) for k, v in row._mapping.items()} for row in self.connection.execute(statement)]


def _utc(value: Any) -> Any:
    """Times as alignbench writes them: UTC, with the zone (a reflected table reads them back naive)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _newer(row: dict[str, Any], mine: Any) -> bool:
    return _utc(row["created_at"]) > _utc(mine["created_at"])


def _insert(connection: Connection, table: Table, values: dict[str, Any]) -> int:
    """Insert one row without its id; returns the id DST gave it."""
    values = {k: v for k, v in values.items() if k in table.c and k != "id"}
    return int(connection.execute(table.insert().values(**values)).inserted_primary_key[0])


def _insert_many(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), _BATCH):
        connection.execute(table.insert(), list(rows[start : start + _BATCH]))


def _match(
    connection: Connection, table: Table, source_rows: Iterable[dict[str, Any]], identity: tuple[str, ...]
) -> tuple[dict[int, int], int]:
    """source id → DST id for rows matched by the ``identity`` columns; rows DST lacks are inserted
    (returns the map and how many were inserted)."""
    existing = {
        tuple(row._mapping[c] for c in identity): row.id for row in connection.execute(select(table.c.id, *(table.c[c] for c in identity)))
    }
    ids, added = {}, 0
    for row in source_rows:
        key = tuple(row[c] for c in identity)
        if key not in existing:
            existing[key] = _insert(connection, table, row)
            added += 1
        ids[row["id"]] = existing[key]
    return ids, added


def _merge_source(connection: Connection, url: str, source: _Source, revision: str, prefer: str) -> SourceMerge:
    result = SourceMerge(display_url(url), revision)
    models = source.rows("model")
    model_ids, result.models = _match(connection, Model.__table__, [{**m, "parent_id": None} for m in models], ("weights_fingerprint",))
    model_table = Model.__table__
    for model in models:  # lineage, once every model has its DST id
        parent = model.get("parent_id")
        if parent is not None:
            connection.execute(
                model_table.update()
                .where(model_table.c.id == model_ids[model["id"]], model_table.c.parent_id.is_(None))
                .values(parent_id=model_ids[parent])
            )
    explainer_ids, result.explainers = _match(
        connection, ExplainerSetting.__table__, source.rows("explainer_setting"), ("method", "params")
    )
    dataset_ids, result.datasets = _match(connection, Dataset.__table__, source.rows("dataset"), ("name", "fingerprint"))
    names = {m["id"]: m["name"] for m in models}

    run_table = Run.__table__
    dst_runs = {
        row.key: row for row in connection.execute(select(run_table.c.id, run_table.c.key, run_table.c.n_images, run_table.c.status))
    }
    for run in source.rows("run"):
        dst = dst_runs.get(run["key"])
        if dst is None:
            values = {
                **run,
                "model_id": model_ids[run["model_id"]],
                "explainer_id": explainer_ids[run["explainer_id"]],
                "dataset_id": dataset_ids[run["dataset_id"]],
            }
            run_id, n_images, status = _insert(connection, run_table, values), run["n_images"], run["status"]
            result.runs += 1
        else:
            run_id, n_images, status = dst.id, dst.n_images, dst.status
            result.runs_matched += 1
        context = (run["key"], run_id, names.get(run["model_id"], "?"))
        added = _merge_rows(connection, source, run["id"], context, result, prefer)
        _merge_thumbnails(connection, source, run["id"], context, result, prefer)
        scores = ImageScore.__table__
        if added and status != "complete":  # the union may complete a run neither store had whole
            have = connection.execute(select(func.count()).select_from(scores).where(scores.c.run_id == run_id)).scalar_one()
            if have >= n_images:
                connection.execute(run_table.update().where(run_table.c.id == run_id).values(status="complete"))
    return result


def _merge_rows(
    connection: Connection, source: _Source, source_run: int, context: tuple[str, int, str], result: SourceMerge, prefer: str
) -> int:
    table = ImageScore.__table__
    run_key, run_id, model = context
    columns = [c for c in _IMAGE_VALUES if c in source.table("image_score").c]
    dst = {row.image_id: row._mapping for row in connection.execute(select(table).where(table.c.run_id == run_id))}
    new = []
    for row in source.rows("image_score", lambda t: t.c.run_id == source_run):
        mine = dst.get(row["image_id"])
        if mine is None:
            new.append({**{k: v for k, v in row.items() if k in table.c and k != "id"}, "run_id": run_id})
            continue
        differ = tuple(c for c in columns if not _same(mine[c], row[c]))
        if not differ:
            result.rows_same += 1
            continue
        replace = prefer == "newer" and _newer(row, mine)
        if replace:
            connection.execute(
                table.update().where(table.c.id == mine["id"]).values(**{c: row[c] for c in columns}, created_at=row["created_at"])
            )
        result.conflicts.append(
            Conflict(
                result.source,
                run_key,
                run_id,
                model,
                row["image_id"],
                "score",
                differ,
                {c: mine[c] for c in differ},
                {c: row[c] for c in differ},
                replace,
            )
        )
    _insert_many(connection, table, new)
    result.rows += len(new)
    return len(new)


def _merge_thumbnails(
    connection: Connection, source: _Source, source_run: int, context: tuple[str, int, str], result: SourceMerge, prefer: str
) -> None:
    if source.table("thumbnail") is None:
        return
    table = Thumbnail.__table__
    run_key, run_id, model = context
    dst = {(row.image_id, row.kind): row._mapping for row in connection.execute(select(table).where(table.c.run_id == run_id))}
    new = []
    for row in source.rows("thumbnail", lambda t: t.c.run_id == source_run):
        mine = dst.get((row["image_id"], row["kind"]))
        if mine is None:
            new.append({**{k: v for k, v in row.items() if k != "id"}, "run_id": run_id})
            continue
        differ = tuple(c for c in _THUMBNAIL_VALUES if not _same(mine[c], row[c]))
        if not differ:
            continue
        replace = prefer == "newer" and _newer(row, mine)
        if replace:
            connection.execute(
                table.update()
                .where(table.c.id == mine["id"])
                .values(**{c: row[c] for c in _THUMBNAIL_VALUES}, created_at=row["created_at"])
            )
        result.conflicts.append(
            Conflict(
                result.source,
                run_key,
                run_id,
                model,
                row["image_id"],
                f"thumbnail:{row['kind']}",
                differ,
                {c: mine[c] for c in differ},
                {c: row[c] for c in differ},
                replace,
            )
        )
    _insert_many(connection, table, new)
    result.thumbnails += len(new)


def merge_stores(sources: Sequence[str], into: str, *, prefer: str = "into") -> MergeResult:
    """Merge every store in ``sources`` into the store at ``into`` (created if missing), one
    transaction per source. Raises StoreError for a source that is missing, not an alignbench store,
    or from a newer alignbench (nothing of it is merged), or a source that is ``into`` itself."""
    if prefer not in PREFER:
        raise StoreError(f"--prefer {prefer!r}: use {' or '.join(PREFER)}")
    if not sources:
        raise StoreError("no store to merge; give one or more SRC stores and --into DST")
    target = resolve_url(into)
    for url in sources:
        if _same_store(url, target):
            raise StoreError(
                f"{display_url(url)} is the store merged into ({display_url(target)}: the same file); give other stores as SRC"
            )
    engines = []
    try:
        for url in sources:  # every source checked before DST is touched
            engine = _read_only_engine(url)
            engines.append((url, engine, _source_revision(engine, url)))
        results = []
        with open_store(target) as store:
            for url, engine, revision in engines:
                with engine.connect() as read, store.engine.execution_options(sqlite_begin="IMMEDIATE").begin() as write:
                    results.append(_merge_source(write, url, _Source(read), revision, prefer))
        return MergeResult(display_url(target), prefer, results)
    finally:
        for _, engine, _ in engines:
            engine.dispose()


def _same_store(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` name one store: for SQLite, one file however it is reached (a symlink,
    another relative path, a hard link: same device and inode); else the same URL."""
    url_a, url_b = make_url(resolve_url(a)), make_url(resolve_url(b))
    if url_a.get_backend_name() == url_b.get_backend_name() == "sqlite" and url_a.database and url_b.database:
        file_a, file_b = Path(url_a.database), Path(url_b.database)
        if file_a.exists() and file_b.exists():
            return os.path.samefile(file_a, file_b)
        return file_a.resolve() == file_b.resolve()
    return url_a.render_as_string(hide_password=False) == url_b.render_as_string(hide_password=False)

"""Named queries on the store. Everything that reads or writes rows goes through these functions."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, select

from alignbench._utils.cache import sha256_text
from alignbench.errors import StoreError
from alignbench.store import listing, recheck
from alignbench.store.engine import create_store_engine, open_store
from alignbench.store.listing import RunView, canonical_json, metric_column
from alignbench.store.tables import (
    METRIC_COLUMNS,
    Dataset,
    ExplainerSetting,
    ImageScore,
    Model,
    ModelTag,
    Run,
    Thumbnail,
    utcnow,
)
from alignbench.store.urls import resolve_url

T = TypeVar("T", bound=SQLModel)


def _get_or_create(session: Session, table: type[T], lookup: Mapping[str, Any], defaults: Mapping[str, Any]) -> T:
    """The row matching ``lookup``, inserted with ``defaults`` if missing; safe against a concurrent insert."""
    statement = select(table).filter_by(**lookup)
    row = session.exec(statement).first()
    if row is not None:
        return row
    row = table(**lookup, **defaults)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # another process inserted the same row between our select and insert
        row = session.exec(statement).one()
    return row


def upsert_model(
    session: Session, identity: Any, *, param_count: int | None = None, family: str | None = None, retag: bool = False
) -> Model:
    """Record a model by its weights fingerprint (``identity`` is an alignbench.models.ModelIdentity).

    Its ``tag``, if any, is added to the model's tags (``tag_model``; ``retag`` moves it from another model)."""
    recipe = getattr(identity, "recipe", None)
    row = _get_or_create(
        session,
        Model,
        {"weights_fingerprint": identity.fingerprint},
        {
            "name": identity.name,
            "family": family,
            "dcls": bool(identity.dcls),
            "recipe": canonical_json(recipe) if recipe else None,
            "init": getattr(identity, "init", None),
            "weights_source": getattr(identity, "weights_source", "") or "",
            "checkpoint_sha256": getattr(identity, "checkpoint_sha256", None),
            "param_count": param_count,
            "request": canonical_json(identity.request) if getattr(identity, "request", None) else None,
            "origin": getattr(identity, "origin", None),
            "ca_stream": bool(getattr(identity, "ca_stream", False)),
        },
    )
    origin = getattr(identity, "origin", None)
    if origin and row.origin is None:  # a row recorded before its checkpoint was read (e.g. by convert)
        row.origin = origin
        session.add(row)
    tag = getattr(identity, "tag", None)
    if tag and tag == origin:  # --tag moco-v3 declares where a checkpoint comes from: a kind shared by many models, no name
        if row.tag is None:
            row.tag = tag
            session.add(row)
    elif tag:  # a tag given now is one more name of the model; one naming another model is refused
        tag_model(session, row, tag, retag=retag)
    if param_count is not None and row.param_count is None:
        row.param_count = param_count
        session.add(row)
    if family is not None and row.family is None:
        row.family = family
        session.add(row)
    return row


def record_model(db: str | None, identity: Any, *, param_count: int | None = None, family: str | None = None) -> str:
    """Record a model (its ModelIdentity, e.g. ``convert_model(...).identity``) in the store at
    ``db``, created when new; returns the store's URL (``alignbench convert``)."""
    with open_store(db) as store, store.session(write=True) as session:
        upsert_model(session, identity, param_count=param_count, family=family)
        session.commit()
        return store.url


def find_model(session: Session, fingerprint: str) -> Model | None:
    return session.exec(select(Model).where(Model.weights_fingerprint == fingerprint)).first()


def record_trained_model(
    session: Session,
    identity: Any,
    *,
    origin: str,
    parent: Model,
    lineage: Mapping[str, Any],
    param_count: int | None = None,
    family: str | None = None,
    retag: bool = False,
) -> Model:
    """Record a model that ``alignbench train`` made: its weights (as upsert_model), the method
    (``origin``), the model it was trained from and its lineage (canonical JSON)."""
    row = upsert_model(session, identity, param_count=param_count, family=family, retag=retag)
    if row.lineage is None:  # the same weights recorded again (another tag, a finished run resumed) keep their first lineage
        row.origin = origin
        row.parent_id = parent.id
        row.lineage = canonical_json(dict(lineage))
        session.add(row)
    return row


def trained_models(session: Session) -> list[tuple[Model, Model | None]]:
    """Every model with an origin (trained, or imported with a lineage), newest first, with its parent."""
    rows = session.exec(select(Model).where(Model.origin.is_not(None)).order_by(Model.id.desc())).all()  # type: ignore[union-attr]
    parents = {row.parent_id for row in rows if row.parent_id is not None}
    by_id = {m.id: m for m in session.exec(select(Model).where(Model.id.in_(parents))).all()} if parents else {}  # type: ignore[union-attr]
    return [(row, by_id.get(row.parent_id)) for row in rows]


class TagTaken(StoreError):
    """A tag already names another model (a tag names one model; ``--retag`` moves it)."""


def tag_owner(session: Session, tag: str) -> Model | None:
    """The model ``tag`` names, if any."""
    owner = session.exec(select(Model).join(ModelTag, ModelTag.model_id == Model.id).where(ModelTag.tag == tag)).first()
    if owner is None:  # a store that got its models from `merge` (which copies model rows, model.tag included)
        owner = session.exec(select(Model).where(Model.tag == tag).order_by(Model.id.desc())).first()  # type: ignore[arg-type]
    return owner


def model_tags(session: Session, model_id: int) -> list[str]:
    """Every tag of a model, in the order they were given."""
    return list(session.exec(select(ModelTag.tag).where(ModelTag.model_id == model_id).order_by(ModelTag.id)).all())


def check_tag(owner: Model | None, fingerprint: str, tag: str, *, retag: bool = False) -> None:
    """Raise TagTaken when ``tag`` names a model other than the one of ``fingerprint`` (and ``retag`` is not given)."""
    if owner is not None and owner.weights_fingerprint != fingerprint and not retag:
        raise TagTaken(
            f"tag {tag!r} already names another model ({owner.name}, fingerprint {owner.weights_fingerprint[:12]}); "
            "choose another --tag, or pass --retag to move it to this one"
        )


def tag_model(session: Session, row: Model, tag: str, *, retag: bool = False) -> bool:
    """Give ``row`` the tag ``tag`` (one more of its names); True when something changed.

    A tag names one model: one that names another model raises TagTaken, unless ``retag`` moves it
    (the other model keeps its other tags; its first name becomes the next of them, or none)."""
    if row.id is None:
        session.flush()
    owner = tag_owner(session, tag)
    if owner is not None and owner.id == row.id:
        return False
    check_tag(owner, row.weights_fingerprint, tag, retag=retag)
    existing = session.exec(select(ModelTag).where(ModelTag.tag == tag)).first()
    if existing is not None:
        existing.model_id = row.id
        session.add(existing)
    else:
        session.add(ModelTag(tag=tag, model_id=row.id))
    if owner is not None and owner.tag == tag:  # the model it is taken from is shown by its next tag, if any
        owner.tag = next((other for other in model_tags(session, owner.id) if other != tag), None)
        session.add(owner)
    if row.tag is None:
        row.tag = tag
        session.add(row)
    session.flush()
    return True


def models_tagged(session: Session, tag: str) -> list[Model]:
    """The model named ``tag`` (a list of one), or none."""
    owner = tag_owner(session, tag)
    return [owner] if owner is not None else []


def add_tag(db: str | None, fingerprint: str, tag: str, *, retag: bool = False) -> bool:
    """Tag the stored model of ``fingerprint`` (``score MODEL --tag NAME`` on a model already stored);
    False when it already had the tag or is not stored."""
    with open_store(db) as store, store.session(write=True) as session:
        row = find_model(session, fingerprint)
        changed = row is not None and tag_model(session, row, tag, retag=retag)
        session.commit()
        return changed


def upsert_explainer(session: Session, method: str, params: Mapping[str, Any]) -> ExplainerSetting:
    return _get_or_create(session, ExplainerSetting, {"method": method, "params": canonical_json(dict(params))}, {})


def upsert_dataset(
    session: Session, name: str, fingerprint: str, size: int, *, ceiling: float | None = None, location: str | None = None
) -> Dataset:
    return _get_or_create(
        session, Dataset, {"name": name, "fingerprint": fingerprint}, {"size": size, "ceiling": ceiling, "location": location}
    )


def run_key(
    model_fingerprint: str,
    method: str,
    params: Mapping[str, Any],
    dataset_fingerprint: str,
    protocol: str,
    metrics: Sequence[str],
    *,
    precision: str = "fp32",
) -> str:
    """The identity of a run: the same inputs always give the same key, so they are computed once.

    The forward pass's precision is part of it only when it is not fp32, so every run stored before
    precision existed (all fp32) keeps its key."""
    parts = ["run-v1", model_fingerprint, method, canonical_json(dict(params)), dataset_fingerprint, protocol, ",".join(sorted(metrics))]
    if precision != "fp32":
        parts.append(f"precision={precision}")
    return sha256_text(*parts)


def needs_recheck(run: Run) -> bool:
    """Whether ``run``'s rows were written by a scorer older than SCORER_REVISION (``alignbench.store.recheck``)."""
    return recheck.needs_recheck(run.versions)


def rows_to_recheck(session: Session, run_id: int) -> set[str]:
    """The image ids of a run's rows that an older scorer may have scored on a constant map: every row
    it gave a value (a row with a skip_reason was undefined already)."""
    statement = select(ImageScore.image_id).where(ImageScore.run_id == run_id, ImageScore.skip_reason.is_(None))  # type: ignore[union-attr]
    return set(session.exec(statement).all())


def stamp_scorer(session: Session, run: Run) -> None:
    """Record that this scorer has (re)computed every row of ``run`` that needed it."""
    try:
        versions = json.loads(run.versions or "{}")
    except ValueError:
        versions = {}
    run.versions = canonical_json({**versions, "scorer": recheck.SCORER_REVISION})
    session.add(run)


def find_run(session: Session, key: str) -> Run | None:
    return session.exec(select(Run).where(Run.key == key)).first()


def runs_by_key(session: Session, keys: Iterable[str]) -> dict[str, Run]:
    """key → run for the keys that have one (one query)."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    return {run.key: run for run in session.exec(select(Run).where(Run.key.in_(keys))).all()}  # type: ignore[attr-defined]


def find_run_like(
    session: Session,
    *,
    model: str,
    dcls: bool,
    recipe: Mapping[str, Any] | None,
    init: str | None,
    method: str,
    params: Mapping[str, Any],
    dataset: str,
    protocol: str,
    metrics: Sequence[str],
    precision: str = "fp32",
) -> Run | None:
    """The most recently updated run of a model and settings named rather than fingerprinted: for
    a machine that has not the weights or the data to make the run key (``study status``)."""
    statement = (
        select(Run)
        .join(Model, Model.id == Run.model_id)
        .join(ExplainerSetting, ExplainerSetting.id == Run.explainer_id)
        .join(Dataset, Dataset.id == Run.dataset_id)
        .where(
            Model.name == model,
            Model.dcls == dcls,
            Model.recipe == (canonical_json(recipe) if recipe else None),
            ExplainerSetting.method == method,
            ExplainerSetting.params == canonical_json(dict(params)),
            Dataset.name == dataset,
            Run.protocol == protocol,
            Run.metrics == ",".join(sorted(set(metrics))),
            Run.precision == precision,
            Model.init == init,  # == None is IS NULL
        )
        .order_by(Run.updated_at.desc(), Run.id.desc())  # type: ignore[attr-defined]
    )
    return session.exec(statement).first()


def get_or_create_run(
    session: Session,
    *,
    key: str,
    model: Model,
    explainer: ExplainerSetting,
    dataset: Dataset,
    protocol: str,
    metrics: Sequence[str],
    n_images: int,
    precision: str = "fp32",
) -> Run:
    return _get_or_create(
        session,
        Run,
        {"key": key},
        {
            "model_id": model.id,
            "explainer_id": explainer.id,
            "dataset_id": dataset.id,
            "protocol": protocol,
            "metrics": ",".join(sorted(metrics)),
            "n_images": n_images,
            "precision": precision,
        },
    )


def scored_image_ids(session: Session, run_id: int) -> set[str]:
    return set(session.exec(select(ImageScore.image_id).where(ImageScore.run_id == run_id)).all())


def _conflict_insert(session: Session):
    """The store dialect's ``insert`` with ON CONFLICT clauses (SQLite, PostgreSQL), or None for
    another database (the callers then filter out what is stored themselves)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    return insert


def insert_scores(session: Session, run_id: int, rows: Iterable[Mapping[str, Any]], *, replace: bool = False) -> int:
    """Insert image rows; images the run already has are kept (a concurrent or resumed writer), or
    overwritten with ``replace=True`` (``score --force``: a row is replaced only once its new value exists)."""
    values = []
    now = utcnow()
    for row in rows:
        value = {"run_id": run_id, "created_at": now, **row}
        for column in METRIC_COLUMNS:  # NaN is stored as NULL: SQL has no NaN, NULL means skipped
            number = value.get(column)
            if number is not None and not math.isfinite(number):
                value[column] = None
        values.append(value)
    if not values:
        return 0
    table = ImageScore.__table__
    insert = _conflict_insert(session)
    if insert is None:  # portable fallback: filter out (or delete) what is there, then insert
        present = scored_image_ids(session, run_id) & {v["image_id"] for v in values}
        if replace and present:
            session.execute(table.delete().where(table.c.run_id == run_id, table.c.image_id.in_(present)))
        elif present:
            values = [v for v in values if v["image_id"] not in present]
        if values:
            session.execute(table.insert(), values)
        return len(values)
    statement = insert(table)
    if replace:
        columns = [c for c in values[0] if c not in ("run_id", "image_id")]
        statement = statement.on_conflict_do_update(index_elements=["run_id", "image_id"], set_={c: statement.excluded[c] for c in columns})
    else:
        statement = statement.on_conflict_do_nothing(index_elements=["run_id", "image_id"])
    # The rows written are counted from RETURNING: a batched INSERT's rowcount is not reliable
    # (psycopg reported a row for an insert that DO NOTHING skipped).
    return len(session.execute(statement.returning(table.c.image_id), values).all())


def update_run(
    session: Session,
    run: Run,
    *,
    status: str | None = None,
    add_seconds: float = 0.0,
    device: str | None = None,
    versions: Mapping[str, str] | None = None,
    heartbeat: bool = False,
) -> Run:
    if status is not None:
        run.status = status
    run.compute_seconds = (run.compute_seconds or 0.0) + add_seconds
    if device is not None:
        run.device = device
    if versions is not None:
        run.versions = canonical_json(dict(versions))
    run.updated_at = utcnow()
    if heartbeat:  # the writing process is alive (alignbench.store.liveness)
        run.heartbeat_at = run.updated_at
    session.add(run)
    return run


def record_process(session: Session, run: Run, *, pid: int, host: str) -> Run:
    """The process now computing ``run``, with a first heartbeat (see alignbench.store.liveness)."""
    run.pid, run.host, run.heartbeat_at = pid, host, utcnow()
    session.add(run)
    return run


def beat(session: Session, run_id: int) -> None:
    """Refresh the heartbeat of run ``run_id`` (one UPDATE; the row is not loaded)."""
    session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))


@dataclass(frozen=True)
class MetricSummary:
    metric: str
    mean: float | None
    n_scored: int
    n_skipped: int


def row_counts(session: Session, run_ids: Sequence[int]) -> dict[int, int]:
    """Rows (images with a row, scored or skipped) per run; counted on the (run, image) index alone."""
    return listing.row_counts(session.connection(), run_ids)


def delete_runs(session: Session, run_ids: Sequence[int]) -> int:
    """Delete runs with their rows and thumbnails, in the caller's transaction; returns the image rows deleted."""
    return listing.delete_runs(session.connection(), run_ids)


def count_rows(session: Session, run_id: int, *, max_index: int | None = None) -> int:
    """Rows a run has, among the first ``max_index`` images of its dataset when given."""
    condition = [ImageScore.run_id == run_id]
    if max_index is not None:
        condition.append(ImageScore.image_index < max_index)
    return int(session.exec(select(func.count()).select_from(ImageScore).where(*condition)).one())


def count_rows_of_key(session: Session, key: str, *, max_index: int | None = None) -> int:
    """Rows of the run with ``key`` (0 when there is none); reads only run.id/key and image_score's
    run_id/image_index, which every schema revision has."""
    run_id = session.exec(select(Run.id).where(Run.key == key)).first()
    return 0 if run_id is None else count_rows(session, run_id, max_index=max_index)


def stored_rows_of_outdated_store(url: str | None, key: str, *, max_index: int) -> int:
    """Rows a store at an older schema revision holds for the run ``key`` (its first ``max_index``
    images), read through columns every revision has; nothing is upgraded or written."""
    engine = create_store_engine(resolve_url(url), create=False)
    try:
        with Session(engine) as session:
            return count_rows_of_key(session, key, max_index=max_index)
    finally:
        engine.dispose()


def summarise(
    session: Session, run_id: int, metrics: Sequence[str], *, max_index: int | None = None
) -> tuple[int, dict[str, MetricSummary]]:
    """(rows present, per-metric mean over non-NULL values) for a run, over its first ``max_index`` images."""
    condition = [ImageScore.run_id == run_id]
    if max_index is not None:
        condition.append(ImageScore.image_index < max_index)
    n_rows = session.exec(select(func.count()).select_from(ImageScore).where(*condition)).one()
    summaries = {}
    for metric in metrics:
        column = getattr(ImageScore, metric_column(metric))
        mean, n_scored = session.exec(select(func.avg(column), func.count(column)).where(*condition)).one()
        summaries[metric] = MetricSummary(metric, None if mean is None else float(mean), int(n_scored), int(n_rows - n_scored))
    return int(n_rows), summaries


def list_runs(session: Session, *, dataset: str | None = None, method: str | None = None, protocol: str | None = None) -> list[RunView]:
    """Every run (of one dataset, explainer method or protocol when given), by id (``alignbench.store.listing``)."""
    return listing.list_runs(session.connection(), dataset_name=dataset, method=method, protocol=protocol)


def per_image_scores(session: Session, run_ids: Sequence[int], metric: str = "spearman") -> dict[int, dict[str, float]]:
    """run id → {image id: value} for the non-NULL values of one metric (one query for all runs)."""
    column = getattr(ImageScore, metric_column(metric))
    out: dict[int, dict[str, float]] = {run_id: {} for run_id in run_ids}
    statement = select(ImageScore.run_id, ImageScore.image_id, column).where(
        ImageScore.run_id.in_(list(run_ids)),
        column.is_not(None),  # type: ignore[attr-defined]
    )
    for run_id, image_id, value in session.exec(statement).all():
        out[run_id][image_id] = float(value)
    return out


ThumbnailKey = tuple[int, str, str]  # (run id, image id, kind)


def stored_thumbnails(session: Session, run_ids: Sequence[int]) -> set[ThumbnailKey]:
    """Which (run, image, kind) thumbnails the store holds for these runs (keys only, no bytes)."""
    if not run_ids:
        return set()
    statement = select(Thumbnail.run_id, Thumbnail.image_id, Thumbnail.kind).where(
        Thumbnail.run_id.in_(sorted(set(run_ids)))  # type: ignore[attr-defined]
    )
    return {(int(run_id), image_id, kind) for run_id, image_id, kind in session.exec(statement).all()}


def read_thumbnails(session: Session, run_id: int, image_ids: Iterable[str]) -> dict[tuple[str, str], Thumbnail]:
    """(image id, kind) → thumbnail row of one run's images."""
    ids = sorted(set(image_ids))
    if not ids:
        return {}
    statement = select(Thumbnail).where(Thumbnail.run_id == run_id, Thumbnail.image_id.in_(ids))  # type: ignore[attr-defined]
    return {(row.image_id, row.kind): row for row in session.exec(statement).all()}


def insert_thumbnails(session: Session, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert thumbnails (run_id, image_id, kind, png, vmin, vmax); one already stored is kept (a
    concurrent report computed the same map from the same inputs)."""
    now = utcnow()
    values = [{"created_at": now, **row} for row in rows]
    if not values:
        return 0
    table = Thumbnail.__table__
    insert = _conflict_insert(session)
    if insert is None:  # portable fallback: leave out what is there, then insert
        present = stored_thumbnails(session, sorted({v["run_id"] for v in values}))
        values = [v for v in values if (v["run_id"], v["image_id"], v["kind"]) not in present]
        if values:
            session.execute(table.insert(), values)
        return len(values)
    statement = insert(table).on_conflict_do_nothing(index_elements=["run_id", "image_id", "kind"])
    return len(session.execute(statement.returning(table.c.image_id), values).all())  # as insert_scores counts

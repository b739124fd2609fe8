"""Looking after a store: upgrading its schema, listing and deleting runs (``alignbench upgrade``,
``alignbench runs``). SQLAlchemy Core only: listing the runs never imports SQLModel's ORM. Each function opens the store itself, so the CLI only parses and prints."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from alignbench.errors import StoreError
from alignbench.store import listing
from alignbench.store._check import StoreOutdated, read_state
from alignbench.store.engine import StoreMissing, open_store, open_store_to_read
from alignbench.store.liveness import RUNNING
from alignbench.store.migrate import head_revision
from alignbench.store.urls import resolve_url, shown_url


@dataclass(frozen=True)
class Upgrade:
    url: str  # as shown (no password)
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade_store(db: str | None = None) -> Upgrade:
    """Migrate the existing store at ``db`` to this alignbench's head revision, in one transaction.

    A missing or empty store, another program's database, a damaged store or one from a newer
    alignbench is refused (StoreError, exit code 2) and left as it is.
    """
    url = resolve_url(db)
    try:
        with open_store(url, create=False, migrate=False):
            return Upgrade(shown_url(url), head_revision(), head_revision())
    except StoreMissing as missing:
        raise StoreError(f"nothing to upgrade: {missing.message.split(';')[0]}") from None
    except StoreOutdated as old:
        before = old.revision
    with open_store(url, create=False, migrate=True) as store:
        after = read_state(store.engine).revision
    return Upgrade(shown_url(url), before, after)


@dataclass(frozen=True)
class StoredRun:
    """One run as ``alignbench runs`` lists it."""

    run_id: int
    model: str
    dcls: bool
    method: str
    dataset: str
    dataset_location: str | None
    protocol: str
    metrics: str
    status: str  # a running run whose process is gone shows as interrupted
    n_rows: int
    n_images: int
    updated_at: object
    tag: str | None = None  # the model's name in the store (a trained model's --tag)
    ca_stream: bool = False


@dataclass(frozen=True)
class DeletedRuns:
    url: str  # as shown (no password)
    runs: list[StoredRun]
    rows: int  # image rows deleted with them


def _stored_runs(connection: Connection) -> list[StoredRun]:
    views = listing.list_runs(connection)
    rows = listing.row_counts(connection, [v.run_id for v in views]) if views else {}
    return [
        StoredRun(
            v.run_id,
            v.model,
            v.dcls,
            v.method,
            v.dataset,
            v.dataset_location,
            v.protocol,
            v.metrics,
            v.status,
            rows[v.run_id],
            v.n_images,
            v.updated_at,
            tag=v.tag,
            ca_stream=v.ca_stream,
        )
        for v in views
    ]


def list_stored_runs(db: str | None = None, *, empty: bool = False) -> list[StoredRun]:
    """Every run in the store (``empty``: only those without a stored row); reads only. A missing or
    empty store has no runs (the CLI says so, as ``report`` does)."""
    try:
        store = open_store_to_read(db)
    except StoreMissing:
        return []
    with store, store.engine.connect() as connection:
        runs = _stored_runs(connection)
    return [run for run in runs if run.n_rows == 0] if empty else runs


def _delete(db: str | None, choose) -> DeletedRuns:
    """Delete the runs ``choose(stored runs)`` returns, rows first, in one transaction."""
    url = resolve_url(db)
    try:
        store = open_store(url, create=False)
    except StoreMissing as missing:
        raise StoreError(f"nothing to delete: {missing.message.split(';')[0]}") from None
    # the write lock first (BEGIN IMMEDIATE): no run starts or grows meanwhile; committed on success
    with store, store.engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        chosen = choose(_stored_runs(connection))
        live = [run for run in chosen if run.status == RUNNING]
        if live:
            ids = ", ".join(str(run.run_id) for run in live)
            raise StoreError(f"run {ids} is still being computed by a live process; stop it (or let it finish) first, nothing was deleted")
        rows = listing.delete_runs(connection, [run.run_id for run in chosen]) if chosen else 0
    return DeletedRuns(shown_url(url), chosen, rows)


def delete_runs(db: str | None, run_ids: list[int]) -> DeletedRuns:
    """Delete the runs ``run_ids`` with their rows and thumbnails, in one transaction; an unknown id
    or a run a live process is computing refuses them all (StoreError), nothing deleted."""
    wanted = list(dict.fromkeys(int(run_id) for run_id in run_ids))
    if not wanted:
        raise StoreError("name the runs to delete: `alignbench runs delete ID...` (`alignbench runs list` shows the ids)")

    def choose(runs: list[StoredRun]) -> list[StoredRun]:
        by_id = {run.run_id: run for run in runs}
        unknown = [str(run_id) for run_id in wanted if run_id not in by_id]
        if unknown:
            raise StoreError(f"no run {', '.join(unknown)} in the store; `alignbench runs list` shows the stored runs, nothing was deleted")
        return [by_id[run_id] for run_id in wanted]

    return _delete(db, choose)


def prune_runs(db: str | None = None, *, empty: bool = False) -> DeletedRuns:
    """Delete every run that has no stored row (``empty``) and no live process, in one transaction."""
    if not empty:
        raise StoreError("say what to prune: `alignbench runs prune --empty` deletes the runs with no stored row")
    return _delete(db, lambda runs: [run for run in runs if run.n_rows == 0 and run.status != RUNNING])

"""What a database holds, checked before alignbench writes to it (or refuses to).

``read_state`` only reads: the table names (SQLAlchemy's inspector, any dialect) and the alembic
revision. ``check_state`` decides, from those alone, whether the database is an alignbench store,
and raises a one-line StoreError when it is not, is damaged, or was written by a newer alignbench:

- no table at all: a new (empty) store, which writing commands create and reading commands report
  as empty;
- tables but no ``alembic_version``: another program's database — unless it holds ``image_score``,
  a name only alignbench gives a table, in which case it is an alignbench store that lost its
  revision table (damaged);
- an ``alembic_version`` with a revision this alignbench does not know: a newer alignbench's store
  when it holds alignbench's tables, else another program's alembic history;
- a known revision with one of that revision's tables missing: damaged.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from alignbench.errors import StoreError
from alignbench.store.migrate import head_revision, revisions, tables_at, unknown_revision
from alignbench.store.urls import another_store, resolve_url, shown_url

_SIGNATURE_TABLE = "image_score"  # no other program is expected to name a table this


class StoreOutdated(StoreError):
    """The store's schema is older than this alignbench's and the command does not upgrade it."""

    def __init__(self, message: str, *, revision: str | None) -> None:
        super().__init__(message)
        self.revision = revision


@dataclass(frozen=True)
class StoreState:
    tables: frozenset[str]
    revision: str | None

    @property
    def empty(self) -> bool:
        return not self.tables

    @property
    def at_head(self) -> bool:
        return self.revision == head_revision()


def read_state(engine: Engine) -> StoreState:
    """The database's tables and alembic revision; reads only."""
    with engine.connect() as connection:
        tables = frozenset(inspect(connection).get_table_names())
        revision = None
        if "alembic_version" in tables:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return StoreState(tables, revision)


def _listing(names: set[str] | frozenset[str], limit: int = 5) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:limit])
    return shown if len(ordered) <= limit else f"{shown}, … ({len(ordered)} tables)"


def check_state(state: StoreState, url: str) -> None:
    """Raise StoreError unless ``state`` is an empty database or an intact alignbench store this
    alignbench can read (at head or an older revision)."""
    where = shown_url(url)
    if state.empty:
        return
    ours = _SIGNATURE_TABLE in state.tables
    if state.revision is None:
        if ours:
            missing = "missing" if "alembic_version" not in state.tables else "empty"
            raise StoreError(
                f"store {where} is damaged: its alembic_version table is {missing}, so its schema revision is "
                f"unknown; restore it from a backup or {another_store(url)}"
            )
        raise StoreError(
            f"{where} is not an alignbench store (it holds other tables: {_listing(state.tables)}); "
            f"{another_store(url)} (a new file or an existing alignbench store)"
        )
    if state.revision not in revisions():
        if ours:
            raise StoreError(
                unknown_revision(
                    where,
                    state.revision,
                    newer_advice="upgrade alignbench to use it",
                    other_advice=f"restore it from a backup or {another_store(url)}",
                )
            )
        raise StoreError(
            f"{where} is not an alignbench store (its alembic revision {state.revision} is not one of alignbench's); "
            f"{another_store(url)} (a new file or an existing alignbench store)"
        )
    missing = tables_at(state.revision) - state.tables
    if missing:
        raise StoreError(
            f"store {where} is damaged: table {_listing(missing)} is missing (schema revision {state.revision} has it); "
            f"restore the store from a backup or {another_store(url)}"
        )


def outdated(state: StoreState, url: str) -> StoreOutdated:
    where = shown_url(url)
    option = "" if url == resolve_url(None) else f" --db {where}"
    return StoreOutdated(
        f"store {where} has schema revision {state.revision}, older than this alignbench's {head_revision()}; "
        f"run `alignbench upgrade{option}` to upgrade it (reading commands never change a store)",
        revision=state.revision,
    )

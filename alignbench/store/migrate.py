"""Alembic migrations applied when a store is opened; a store from a newer alignbench is refused.

Opening a store that is already at the head revision reads ``alembic_version`` with one plain query
and never imports alembic (slow to import), so read-only commands stay fast; alembic runs only to upgrade.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from alignbench.errors import StoreError
from alignbench.store.urls import migrations_dir

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config

# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises migrations of one database.
_MIGRATION_LOCK = 0x616C69676E62  # "alignb"
_REVISION = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)
_TABLE_OP = re.compile(r"op\.(create_table|drop_table)\(\s*['\"](\w+)['\"]")


def alembic_config() -> Config:
    from alembic.config import Config  # alembic only to upgrade (see the module docstring)

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


@lru_cache(maxsize=1)
def revisions() -> dict[str, str | None]:
    """revision → down_revision, read from migrations/versions without importing alembic."""
    graph: dict[str, str | None] = {}
    for path in sorted(Path(migrations_dir(), "versions").glob("*.py")):
        source = path.read_text()
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision and down:
            graph[revision.group(1)] = down.group(1)
    return graph


@lru_cache(maxsize=1)
def _table_changes() -> dict[str, tuple[tuple[str, str], ...]]:
    """revision → the (create_table | drop_table, table) operations of its upgrade(), in order."""
    changes: dict[str, tuple[tuple[str, str], ...]] = {}
    for path in sorted(Path(migrations_dir(), "versions").glob("*.py")):
        source = path.read_text()
        revision = _REVISION.search(source)
        if revision:
            upgrade = source.split("def downgrade", 1)[0]
            changes[revision.group(1)] = tuple(_TABLE_OP.findall(upgrade))
    return changes


def tables_at(revision: str) -> frozenset[str]:
    """The tables a store at ``revision`` has (alembic_version included), read from the migrations."""
    graph = revisions()
    chain = []
    while revision is not None:
        chain.append(revision)
        revision = graph[revision]
    tables = {"alembic_version"}
    for step in reversed(chain):
        for operation, table in _table_changes().get(step, ()):
            (tables.add if operation == "create_table" else tables.discard)(table)
    return frozenset(tables)


def head_revision() -> str:
    graph = revisions()
    (head,) = set(graph) - set(graph.values())  # a linear history has exactly one head
    return head


def unknown_revision(where: str, revision: str, *, newer_advice: str, other_advice: str) -> str:
    """The message for a store whose schema revision this alignbench does not know: a later one of
    ours (revisions are numbered, ``0001``, ``0002``, ...) was written by a newer alignbench; any
    other was written by no alignbench release (a damaged store, or another fork's migrations)."""
    head = head_revision()
    if revision.isdigit() and len(revision) == len(head) and revision > head:
        return f"store {where} was written by a newer alignbench (schema revision {revision}, this one knows up to {head}); {newer_advice}"
    return (
        f"store {where} has schema revision {revision!r}, which no alignbench release wrote (this one knows "
        f"{first_revision()} to {head}); {other_advice}"
    )


def first_revision() -> str:
    (first,) = [revision for revision, down in revisions().items() if down is None]
    return first


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_to_head(engine: Engine, url: str, *, revision: str = "head") -> None:
    """Upgrade the store to ``revision`` in one transaction; refuse revisions this code does not know."""
    target = head_revision() if revision == "head" else revision
    current = current_revision(engine)
    if current == target:
        return
    if current is not None and current not in revisions():
        raise StoreError(
            unknown_revision(
                url, current, newer_advice="upgrade alignbench to use it", other_advice="restore it from a backup or pass another --db"
            )
        )
    from alembic import command

    config = alembic_config()
    # Concurrent openers of a new store wait for one migration, then see it: BEGIN IMMEDIATE on
    # SQLite, a transaction-scoped advisory lock on PostgreSQL (whose DDL is transactional too).
    with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, target)

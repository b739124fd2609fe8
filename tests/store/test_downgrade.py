"""Every migration can be undone on the store's own database, rows kept (issue 25, item 12: 0003's
downgrade failed on SQLite; 0004 is checked too), and upgraded again."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

import alignbench.store.migrate as migrate
from alignbench.store import open_store
from alignbench.store.engine import create_store_engine
from alignbench.store.migrate import alembic_config, current_revision, head_revision, revisions, tables_at, upgrade_to_head
from alignbench.testing.synthetic import add_run

# the migrations of this tree (an editable install may map alignbench.migrations to another checkout)
_TREE_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


@pytest.fixture(autouse=True)
def _this_trees_migrations(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(migrate, "migrations_dir", lambda: _TREE_MIGRATIONS)
    migrate.revisions.cache_clear()
    migrate._table_changes.cache_clear()
    yield
    migrate.revisions.cache_clear()
    migrate._table_changes.cache_clear()


def _downgrade(url: str, target: str) -> None:
    from alembic import command

    engine = create_store_engine(url)
    config = alembic_config()
    with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, target)
    engine.dispose()


def _counts(url: str) -> tuple[int, int, int]:
    engine = create_engine(url)
    with engine.connect() as connection:
        counts = tuple(connection.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("model", "run", "image_score"))
        if connection.dialect.name == "sqlite":
            assert connection.execute(text("PRAGMA foreign_key_check")).fetchall() == []
    engine.dispose()
    return counts


def test_every_migration_downgrades_with_its_rows_and_upgrades_again(store_url: str) -> None:
    with open_store(store_url) as store:
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.2, 0.3])
        add_run(store, model="resnet50", dcls=True, values=[0.2, 0.3])
    engine = create_engine(store_url)
    with engine.begin() as connection:  # a trained model: lineage pointing at its parent (0003's columns)
        connection.execute(text("UPDATE model SET parent_id = (SELECT min(id) FROM model), tag = 't1' WHERE dcls"))
    engine.dispose()
    before = _counts(store_url)
    chain = []
    revision = head_revision()
    while revisions()[revision] is not None:
        chain.append(revisions()[revision])
        revision = revisions()[revision]
    for target in chain:  # 0003, 0002, 0001: one step at a time
        _downgrade(store_url, target)
        engine = create_store_engine(store_url)
        assert current_revision(engine) == target
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == tables_at(target)
        engine.dispose()
        assert _counts(store_url) == before
    engine = create_store_engine(store_url)
    upgrade_to_head(engine, store_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()
    assert _counts(store_url) == before

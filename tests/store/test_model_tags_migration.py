"""Migration 0005 (model_tag), up and down on SQLite and PostgreSQL: tags carried over from
``model.tag``, a tag that several models carried going to the newest of them (the one ``score
--trained`` resolved to), and the downgrade leaving the 0004 schema."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect, text

from alignbench.store import open_store
from alignbench.store.migrate import alembic_config, current_revision


def _migrate(url: str, step, revision: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            step(config, revision)
    finally:
        engine.dispose()


def test_0005_carries_tags_over_and_downgrades(store_url: str) -> None:
    open_store(store_url).close()  # a new store at head
    _migrate(store_url, command.downgrade, "0004")
    engine = create_engine(store_url)
    try:
        assert "model_tag" not in inspect(engine).get_table_names()
        with engine.begin() as connection:
            for number, tag in enumerate(["dup", "dup", "solo", None], start=1):
                connection.execute(
                    text(
                        "INSERT INTO model (id, name, dcls, weights_source, weights_fingerprint, created_at, tag, ca_stream) "
                        "VALUES (:id, 'm', false, '', :fingerprint, '2026-01-01', :tag, false)"
                    ),
                    {"id": number, "fingerprint": f"fp{number}", "tag": tag},
                )
        _migrate(store_url, command.upgrade, "0005")
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT tag, model_id FROM model_tag ORDER BY tag")).all()
            assert [tuple(row) for row in rows] == [("dup", 2), ("solo", 3)]
            assert current_revision(engine) == "0005"
        _migrate(store_url, command.downgrade, "0004")
        assert "model_tag" not in inspect(engine).get_table_names()
        assert current_revision(engine) == "0004"
    finally:
        engine.dispose()

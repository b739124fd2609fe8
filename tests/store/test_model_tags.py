"""Tags (issue 25): a tag names one model, a model may carry several; migration 0005 (model_tag) up
and down on SQLite and PostgreSQL — tags carried over from ``model.tag``, a tag that several models
carried going to the newest of them (the one ``score --trained`` resolved to), the downgrade leaving
the 0004 schema."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from alignbench.store import open_store
from alignbench.store import queries as q
from alignbench.store.migrate import alembic_config, current_revision
from alignbench.store.tables import Model


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


def _identity(fingerprint: str, tag: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(name="m", fingerprint=fingerprint, dcls=False, tag=tag)


def test_a_tag_names_one_model_and_a_model_carries_several(tmp_path) -> None:
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store, store.session(write=True) as session:
        first = q.upsert_model(session, _identity("fp1", "one"))
        assert q.upsert_model(session, _identity("fp1", "two")).id == first.id
        assert q.model_tags(session, first.id) == ["one", "two"] and first.tag == "one"  # not renamed
        with pytest.raises(q.TagTaken, match="tag 'one' already names another model"):
            q.upsert_model(session, _identity("fp2", "one"))
        second = q.upsert_model(session, _identity("fp2", "one"), retag=True)
        assert q.tag_owner(session, "one").id == second.id and second.tag == "one"
        assert q.model_tags(session, first.id) == ["two"] and first.tag == "two"


def test_a_store_merged_without_its_tag_rows_still_resolves_model_tag(tmp_path) -> None:
    # merge copies model rows (model.tag included) but not model_tag: the column still names the model
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store, store.session(write=True) as session:
        merged = Model(name="m", weights_fingerprint="fp-merged", tag="old")
        session.add(merged)
        session.flush()
        assert q.tag_owner(session, "old").id == merged.id
        with pytest.raises(q.TagTaken):
            q.upsert_model(session, _identity("fp-new", "old"))
        moved = q.upsert_model(session, _identity("fp-new", "old"), retag=True)
        assert q.tag_owner(session, "old").id == moved.id and merged.tag is None


def test_tag_moco_v3_declares_an_origin_that_many_models_share(tmp_path) -> None:
    # README's MoCo workflow: a ResNet and a ViT checkpoint both scored with --tag moco-v3
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store, store.session(write=True) as session:
        for fingerprint in ("resnet", "vit"):
            row = q.upsert_model(
                session, SimpleNamespace(name=fingerprint, fingerprint=fingerprint, dcls=False, tag="moco-v3", origin="moco-v3")
            )
            assert row.tag == row.origin == "moco-v3" and q.model_tags(session, row.id) == []

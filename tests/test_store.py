"""The results store: round trips, constraints, migrations, concurrency and bad stores."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy.exc import IntegrityError

from alignbench.errors import StoreError
from alignbench.store import StoreMissing, open_store
from alignbench.store import queries as q
from alignbench.store.engine import create_store_engine
from alignbench.store.migrate import alembic_config, current_revision, first_revision, head_revision, upgrade_to_head


def _identity(fingerprint: str = "f" * 64, name: str = "resnet50", dcls: bool = False):
    return SimpleNamespace(
        name=name,
        dcls=dcls,
        recipe={"version": "v0", "kernel_count": 5, "dilated_kernel_size": 7} if dcls else None,
        init="checkpoint" if dcls else None,
        weights_source="test",
        fingerprint=fingerprint,
        checkpoint_sha256=None,
    )


def _make_run(session, *, fingerprint="f" * 64, protocol="aligned"):
    model = q.upsert_model(session, _identity(fingerprint), param_count=25_557_032, family="resnet")
    explainer = q.upsert_explainer(session, "threshold-gradcam", {"threshold": 0.3})
    dataset = q.upsert_dataset(session, "sample", "d" * 64, 3)
    key = q.run_key(model.weights_fingerprint, explainer.method, {"threshold": 0.3}, dataset.fingerprint, protocol, ["spearman"])
    run = q.get_or_create_run(
        session, key=key, model=model, explainer=explainer, dataset=dataset, protocol=protocol, metrics=["spearman"], n_images=3
    )
    return run


def test_round_trip_and_idempotent_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store, store.session(write=True) as session:
        run = _make_run(session)
        rows = [
            {"image_index": 0, "image_id": "a", "target": 1, "prediction": 1, "confidence": 0.9, "spearman": 0.25},
            {"image_index": 1, "image_id": "b", "target": 2, "prediction": 3, "confidence": 0.5, "spearman": float("nan"), "skip_reason": "constant map"},
            {"image_index": 2, "image_id": "c", "target": 3, "prediction": 3, "confidence": 0.7, "spearman": 0.75},
        ]
        assert q.insert_scores(session, run.id, rows) == 3
        # the same images again (a resumed or concurrent writer) add nothing and change nothing
        assert q.insert_scores(session, run.id, [{**rows[0], "spearman": -1.0}]) == 0
        assert _make_run(session).id == run.id  # same inputs, same run
        session.commit()
    with open_store(url) as store, store.session() as session:
        n_rows, summary = q.summarise(session, run.id, ["spearman"])
        assert n_rows == 3
        assert summary["spearman"].mean == pytest.approx(0.5)
        assert (summary["spearman"].n_scored, summary["spearman"].n_skipped) == (2, 1)
        assert q.scored_image_ids(session, run.id) == {"a", "b", "c"}
        assert q.per_image_scores(session, [run.id]) == {run.id: {"a": 0.25, "c": 0.75}}
        (view,) = q.list_runs(session, dataset="sample", method="threshold-gradcam", protocol="aligned")
        assert (view.model, view.param_count, view.n_images) == ("resnet50", 25_557_032, 3)
        assert q.list_runs(session, protocol="paper") == []


def test_constraints_enforced(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        with store.session(write=True) as session:
            run = _make_run(session)
            session.commit()
        engine = store.engine
        with pytest.raises(IntegrityError):  # foreign keys are on
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO image_score (run_id, image_index, image_id, created_at) VALUES (999, 0, 'x', '2026-01-01')"
                )
        with pytest.raises(IntegrityError):  # one row per (run, image)
            with engine.begin() as conn:
                for _ in range(2):
                    conn.exec_driver_sql(
                        f"INSERT INTO image_score (run_id, image_index, image_id, created_at) VALUES ({run.id}, 0, 'x', '2026-01-01')"
                    )


def test_sqlite_settings(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_in_memory_store() -> None:
    with open_store("sqlite://") as store, store.session(write=True) as session:
        run = _make_run(session)
        q.insert_scores(session, run.id, [{"image_index": 0, "image_id": "a", "spearman": 0.1}])
        session.commit()
        assert q.summarise(session, run.id, ["spearman"])[0] == 1


def test_env_var_and_default_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from alignbench.store import resolve_url

    monkeypatch.setenv("ALIGNBENCH_DB", f"sqlite:///{tmp_path / 'env.db'}")
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'env.db'}"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.delenv("ALIGNBENCH_DB")
    assert resolve_url(None) == "sqlite:///alignbench.db"


def test_revision_graph_matches_alembic() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    assert head_revision() == script.get_current_head()
    assert first_revision() == list(script.walk_revisions())[-1].revision


def test_upgrade_from_first_revision_keeps_every_row(tmp_path: Path) -> None:
    """A store written at the first revision opens at head with all its rows."""
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    engine = create_store_engine(url)
    upgrade_to_head(engine, url, revision=first_revision())
    assert current_revision(engine) == first_revision()
    with engine.begin() as conn:  # rows as the first revision's code wrote them (plain SQL: its columns)
        conn.exec_driver_sql(
            "INSERT INTO model (id, name, dcls, weights_source, weights_fingerprint, created_at) "
            "VALUES (1, 'convnext_tiny', 1, 'zenodo', 'fp', '2026-01-01 00:00:00')"
        )
        conn.exec_driver_sql("INSERT INTO explainer_setting (id, method, params) VALUES (1, 'gradcam', '{}')")
        conn.exec_driver_sql(
            "INSERT INTO dataset (id, name, fingerprint, size, ceiling, created_at) VALUES (1, 'clickme-val', 'dfp', 2, 0.65753, '2026-01-01 00:00:00')"
        )
        conn.exec_driver_sql(
            "INSERT INTO run (id, key, model_id, explainer_id, dataset_id, protocol, metrics, status, n_images, compute_seconds, versions, created_at, updated_at) "
            "VALUES (1, 'k', 1, 1, 1, 'paper', 'spearman', 'complete', 2, 1.5, '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        for i, value in enumerate((0.1, 0.3)):
            conn.exec_driver_sql(
                "INSERT INTO image_score (run_id, image_index, image_id, target, prediction, spearman, created_at) "
                f"VALUES (1, {i}, 'img{i}', 5, 5, {value}, '2026-01-01 00:00:00')"
            )
    engine.dispose()
    with open_store(url) as store:
        assert current_revision(store.engine) == head_revision()
        with store.session() as session:
            n_rows, summary = q.summarise(session, 1, ["spearman"])
            assert n_rows == 2 and summary["spearman"].mean == pytest.approx(0.2)
            (view,) = q.list_runs(session)
            assert (view.model, view.dcls, view.dataset, view.ceiling, view.protocol) == ("convnext_tiny", True, "clickme-val", 0.65753, "paper")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corrupt_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a sqlite database" * 100)
    before = _sha(path)
    with pytest.raises(StoreError, match="cannot open store"):
        open_store(f"sqlite:///{path}")
    assert _sha(path) == before


def test_newer_revision_is_refused_and_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    url = f"sqlite:///{path}"
    with open_store(url) as store, store.session(write=True) as session:
        _make_run(session)
        session.commit()
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = 'fffffffffff9'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer alignbench"):
        open_store(url)
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM run").fetchone() == (1,)
    assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("fffffffffff9",)
    con.close()


@pytest.mark.parametrize(
    "url, message",
    [
        ("nosuchdb://user@host/x", "unknown database scheme"),
        ("not a url", "not a database URL"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_unwritable_locations(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path / 'missing-dir' / 's.db'}")
    with pytest.raises(StoreError, match="is a directory"):
        open_store(f"sqlite:///{tmp_path}")
    with pytest.raises(StoreMissing):
        open_store(f"sqlite:///{tmp_path / 'absent.db'}", create=False)
    assert not (tmp_path / "absent.db").exists()


_WRITER = textwrap.dedent(
    """
    import sys
    from types import SimpleNamespace
    from alignbench.store import open_store
    from alignbench.store import queries as q

    url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open_store(url) as store:
        for i in range(n):
            with store.session(write=True) as session:  # one short transaction per row, as the scorer does per batch
                identity = SimpleNamespace(name="m", dcls=False, recipe=None, init=None, weights_source="t", fingerprint="shared", checkpoint_sha256=None)
                model = q.upsert_model(session, identity)
                explainer = q.upsert_explainer(session, "gradcam", {})
                dataset = q.upsert_dataset(session, "sample", "fp", n)
                key = q.run_key("shared", "gradcam", {}, "fp", "aligned", ["spearman"])
                run = q.get_or_create_run(session, key=key, model=model, explainer=explainer, dataset=dataset,
                                          protocol="aligned", metrics=["spearman"], n_images=n)
                q.insert_scores(session, run.id, [{"image_index": i, "image_id": f"{name}-{i}", "spearman": i / n}])
                session.commit()
    print("ok")
    """
)


def test_two_processes_write_one_store(tmp_path: Path) -> None:
    """Two writers at once on a new store: no 'database is locked', no lost row, one model/run."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    n = 150
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, url, name, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("p", "q")
    ]
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    con = sqlite3.connect(tmp_path / "shared.db")
    assert con.execute("SELECT count(*) FROM image_score").fetchone() == (2 * n,)
    assert con.execute("SELECT count(*), count(DISTINCT key) FROM run").fetchone() == (1, 1)
    assert con.execute("SELECT count(*) FROM model").fetchone() == (1,)
    con.close()


def test_example_store_opens_at_head(tmp_path: Path) -> None:
    """alignbench.db.example is a real store at the head revision (regenerate it when the schema changes)."""
    example = Path(__file__).resolve().parents[1] / "alignbench.db.example"
    copy = tmp_path / "example.db"
    copy.write_bytes(example.read_bytes())
    engine = create_store_engine(f"sqlite:///{copy}")
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM run").scalar() >= 1
        assert conn.exec_driver_sql("SELECT count(*) FROM image_score WHERE spearman IS NOT NULL").scalar() >= 1
    engine.dispose()


def test_migrations_create_exactly_the_tables(tmp_path: Path) -> None:
    """alembic autogenerate finds nothing to do: migrations/ and tables.py describe one schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store, store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


@pytest.mark.parametrize("command", [["score", "--limit", "1"], ["compare"], ["report"]])
def test_cli_refuses_a_bad_store_with_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    from typer.testing import CliRunner

    from alignbench.cli.app import app

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database at all" * 50)
    before = _sha(corrupt)
    for url, message in ((f"sqlite:///{corrupt}", "cannot open store"), ("nosuchdb://x/y", "unknown database scheme")):
        result = CliRunner().invoke(app, [*command, "--db", url])
        assert result.exit_code == 2, result.output
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _sha(corrupt) == before

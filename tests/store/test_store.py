"""The results store: round trips, constraints, migrations, concurrency and bad stores.

Tests taking ``store_url`` run twice: on SQLite and on a real PostgreSQL server (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from alignbench.errors import StoreError
from alignbench.store import StoreMissing, open_store
from alignbench.store import queries as q
from alignbench.store.engine import create_store_engine
from alignbench.store.migrate import alembic_config, current_revision, first_revision, head_revision, upgrade_to_head
from alignbench.store.tables import Run

# a float64 mean of n values ≤ 1, in any order: float32_bound(n + 2, 1, eps=EPS64) (tolerance, written out:
# this module does not import torch)


def mean_atol(n: int) -> float:
    return 2 * (n + 2) * 2.0**-52


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


def _make_run(session, *, fingerprint="f" * 64, protocol="aligned", precision="fp32"):
    model = q.upsert_model(session, _identity(fingerprint), param_count=25_557_032, family="resnet")
    explainer = q.upsert_explainer(session, "threshold-gradcam", {"threshold": 0.3})
    dataset = q.upsert_dataset(session, "sample", "d" * 64, 3)
    key = q.run_key(
        model.weights_fingerprint, explainer.method, {"threshold": 0.3}, dataset.fingerprint, protocol, ["spearman"], precision=precision
    )
    run = q.get_or_create_run(
        session,
        key=key,
        model=model,
        explainer=explainer,
        dataset=dataset,
        protocol=protocol,
        metrics=["spearman"],
        n_images=3,
        precision=precision,
    )
    return run


def _scalar(url: str, sql: str):
    """One value read with a plain engine (no alignbench code in between)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def test_round_trip_and_idempotent_records(store_url: str) -> None:
    url = store_url
    with open_store(url) as store, store.session(write=True) as session:
        run = _make_run(session)
        rows = [
            {"image_index": 0, "image_id": "a", "target": 1, "prediction": 1, "confidence": 0.9, "spearman": 0.25},
            {
                "image_index": 1,
                "image_id": "b",
                "target": 2,
                "prediction": 3,
                "confidence": 0.5,
                "spearman": float("nan"),
                "skip_reason": "constant map",
            },
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
        assert summary["spearman"].mean == pytest.approx(0.5, rel=0, abs=mean_atol(2))
        assert (summary["spearman"].n_scored, summary["spearman"].n_skipped) == (2, 1)
        assert q.scored_image_ids(session, run.id) == {"a", "b", "c"}
        assert q.per_image_scores(session, [run.id]) == {run.id: {"a": 0.25, "c": 0.75}}
        (view,) = q.list_runs(session, dataset="sample", method="threshold-gradcam", protocol="aligned")
        assert (view.model, view.param_count, view.n_images) == ("resnet50", 25_557_032, 3)
        assert q.list_runs(session, protocol="paper") == []


def test_run_keys_name_exactly_the_inputs(store_url: str) -> None:
    """The same inputs are one run; another protocol or precision is another run. fp32 keeps the key
    runs had before precision existed, so stores written then stay valid."""
    before_precision = q.run_key("f" * 64, "threshold-gradcam", {"threshold": 0.3}, "d" * 64, "aligned", ["spearman"])
    with open_store(store_url) as store, store.session(write=True) as session:
        fp32 = _make_run(session)
        assert fp32.key == before_precision and fp32.precision == "fp32"
        assert _make_run(session).id == fp32.id
        bf16 = _make_run(session, precision="bf16")
        paper = _make_run(session, protocol="paper")
        assert len({fp32.id, bf16.id, paper.id}) == 3
        assert (bf16.precision, paper.precision) == ("bf16", "fp32")
        session.commit()
    assert _scalar(store_url, "SELECT count(*) FROM run") == 3
    assert _scalar(store_url, "SELECT count(*) FROM model") == 1


def test_an_interrupted_run_resumes_with_the_missing_rows_only(store_url: str) -> None:
    with open_store(store_url) as store:
        with store.session(write=True) as session:
            run = _make_run(session)
            q.insert_scores(session, run.id, [{"image_index": 0, "image_id": "a", "spearman": 0.5}])
            session.commit()
        # the next process: same key, same run; what is stored is skipped, the rest inserted
        with store.session(write=True) as session:
            resumed = _make_run(session)
            assert resumed.id == run.id and q.scored_image_ids(session, run.id) == {"a"}
            rows = [{"image_index": i, "image_id": image, "spearman": 0.1 * i} for i, image in enumerate("abc")]
            assert q.insert_scores(session, run.id, rows) == 2
            session.commit()
        with store.session() as session:
            assert q.count_rows(session, run.id) == 3
            assert q.per_image_scores(session, [run.id])[run.id] == {"a": 0.5, "b": 0.1, "c": 0.1 * 2}  # stored as given


def test_constraints_enforced(store_url: str) -> None:
    with open_store(store_url) as store:
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


def test_upgrade_from_first_revision_keeps_every_row(store_url: str) -> None:
    """A store written at the first revision opens at head with all its rows."""
    url = store_url
    engine = create_store_engine(url)
    upgrade_to_head(engine, url, revision=first_revision())
    assert current_revision(engine) == first_revision()
    when = datetime(2026, 1, 1)
    with engine.begin() as conn:  # rows as the first revision's code wrote them (plain SQL: its columns)
        conn.execute(
            text(
                "INSERT INTO model (id, name, dcls, weights_source, weights_fingerprint, created_at) "
                "VALUES (1, 'convnext_tiny', :dcls, 'zenodo', 'fp', :when)"
            ),
            {"dcls": True, "when": when},
        )
        conn.execute(text("INSERT INTO explainer_setting (id, method, params) VALUES (1, 'gradcam', '{}')"))
        conn.execute(
            text(
                "INSERT INTO dataset (id, name, fingerprint, size, ceiling, created_at) VALUES (1, 'clickme-val', 'dfp', 2, 0.65753, :when)"
            ),
            {"when": when},
        )
        conn.execute(
            text(
                "INSERT INTO run (id, key, model_id, explainer_id, dataset_id, protocol, metrics, status, n_images, compute_seconds, versions, created_at, updated_at) "
                "VALUES (1, 'k', 1, 1, 1, 'paper', 'spearman', 'complete', 2, 1.5, '{}', :when, :when)"
            ),
            {"when": when},
        )
        for i, value in enumerate((0.1, 0.3)):
            conn.execute(
                text(
                    "INSERT INTO image_score (run_id, image_index, image_id, target, prediction, spearman, created_at) "
                    "VALUES (1, :i, :image, 5, 5, :value, :when)"
                ),
                {"i": i, "image": f"img{i}", "value": value, "when": when},
            )
    engine.dispose()
    with open_store(url) as store:
        assert current_revision(store.engine) == head_revision()
        with store.session() as session:
            n_rows, summary = q.summarise(session, 1, ["spearman"])
            assert n_rows == 2 and summary["spearman"].mean == pytest.approx(0.2, rel=0, abs=mean_atol(2))
            (view,) = q.list_runs(session)
            assert (view.model, view.dcls, view.dataset, view.ceiling, view.protocol) == (
                "convnext_tiny",
                True,
                "clickme-val",
                0.65753,
                "paper",
            )
            assert session.get(Run, 1).precision == "fp32"  # every run before 0003 was computed in fp32


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corrupt_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a sqlite database" * 100)
    before = _sha(path)
    with pytest.raises(StoreError, match="cannot open store"):
        open_store(f"sqlite:///{path}")
    assert _sha(path) == before


@pytest.mark.parametrize(
    ("revision", "message"), [("9999", "newer alignbench"), ("fffffffffff9", "which no alignbench release wrote")], ids=["newer", "unknown"]
)
def test_newer_or_unknown_revision_is_refused_and_rows_kept(store_url: str, revision: str, message: str) -> None:
    url = store_url
    with open_store(url) as store, store.session(write=True) as session:
        _make_run(session)
        session.commit()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()
    with pytest.raises(StoreError, match=message):
        open_store(url)
    assert _scalar(url, "SELECT count(*) FROM run") == 1
    assert _scalar(url, "SELECT version_num FROM alembic_version") == revision


def test_an_unreachable_server_is_one_line_naming_host_and_port() -> None:
    pytest.importorskip("psycopg")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreError) as error:
        open_store(f"postgresql://someone:secret@127.0.0.1:{port}/results")
    message = error.value.message
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    assert "secret" not in message


@pytest.mark.parametrize(
    "url, message",
    [
        ("nosuchdb://user@host/x", "unknown database scheme"),
        ("://nowhere", "not a database URL"),
        ("postgresql://me@host:port/db", "not a database URL"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_a_plain_path_is_a_sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--db m.db, ALIGNBENCH_DB=/path and merge's SRC/DST take file paths, as sqlite-utils does."""
    from alignbench.store.urls import as_url, resolve_url

    monkeypatch.chdir(tmp_path)
    assert as_url("m.db") == "sqlite:///m.db"
    open_store(str(tmp_path / "a b?#.db")).close()  # URL-special characters stay part of the file name
    assert (tmp_path / "a b?#.db").is_file()
    with open_store("m.db") as store, store.session(write=True) as session:
        _make_run(session)
        session.commit()
    assert _scalar("sqlite:///m.db", "SELECT count(*) FROM run") == 1
    monkeypatch.setenv("ALIGNBENCH_DB", str(tmp_path / "m.db"))
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'm.db'}"
    with open_store() as store:
        assert store.url == resolve_url(None)


def test_errors_about_the_environments_store_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNBENCH_DB", "nosuchdb://user@host/x")
    with pytest.raises(StoreError, match="^ALIGNBENCH_DB='nosuchdb://user@host/x': unknown database scheme"):
        open_store()
    monkeypatch.setenv("ALIGNBENCH_DB", str(tmp_path))  # a directory
    with pytest.raises(StoreError, match="^ALIGNBENCH_DB=.* is a directory"):
        open_store()


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


def test_two_processes_write_one_store(store_url: str) -> None:
    """Two writers at once on a new store: no 'database is locked', no lost or duplicated row, one model/run."""
    url = store_url
    n = 150
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, url, name, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("p", "q")
    ]
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    assert _scalar(url, "SELECT count(*) FROM image_score") == 2 * n
    assert _scalar(url, "SELECT count(DISTINCT image_id) FROM image_score") == 2 * n
    assert _scalar(url, "SELECT count(*) FROM run") == 1
    assert _scalar(url, "SELECT count(*) FROM model") == 1


def test_example_store_opens_at_head(tmp_path: Path) -> None:
    """alignbench.db.example is a real store at the head revision (regenerate it when the schema changes)."""
    example = Path(__file__).resolve().parents[2] / "alignbench.db.example"
    copy = tmp_path / "example.db"
    copy.write_bytes(example.read_bytes())
    engine = create_store_engine(f"sqlite:///{copy}")
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM run").scalar() >= 1
        assert conn.exec_driver_sql("SELECT count(*) FROM image_score WHERE spearman IS NOT NULL").scalar() >= 1
    engine.dispose()


def test_migrations_create_exactly_the_tables(store_url: str) -> None:
    """alembic autogenerate finds nothing to do: migrations/ and tables.py describe one schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with open_store(store_url) as store, store.engine.connect() as conn:
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


@pytest.mark.parametrize("command", [["score", "--limit", "1"], ["compare"], ["study", "status", "demo"], ["merge"]])
def test_cli_names_an_unreachable_server_in_one_line(command: list[str]) -> None:
    from typer.testing import CliRunner

    from alignbench.cli.app import app

    pytest.importorskip("psycopg")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://team@127.0.0.1:{port}/alignbench"
    where = [url, "--into", "sqlite:///never-created.db"] if command == ["merge"] else ["--db", url]
    result = CliRunner().invoke(app, [*command, *where])
    assert result.exit_code == 2, result.output
    assert f"127.0.0.1:{port}" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output

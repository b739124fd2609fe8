"""The store is checked before anything is written: other programs' databases, damaged stores and
older stores are refused with one line by the commands that read (issue 11, item 2 and 3)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.store import open_store
from alignbench.store import queries as q
from alignbench.store.engine import create_store_engine
from alignbench.store.migrate import alembic_config, current_revision, head_revision, revisions, tables_at, upgrade_to_head

READING_COMMANDS = [["report"], ["compare"], ["report", "--json"], ["score", "--limit", "1"], ["upgrade"]]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _foreign(path: Path, *, alembic_revision: str | None = None) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO customer (name) VALUES ('ada'), ('grace')")
    if alembic_revision:
        con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        con.execute("INSERT INTO alembic_version VALUES (?)", (alembic_revision,))
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("command", READING_COMMANDS)
@pytest.mark.parametrize("alembic_revision", [None, "a1b2c3d4e5f6"])
def test_another_programs_database_is_refused_and_left_byte_identical(tmp_path: Path, command, alembic_revision) -> None:
    path = _foreign(tmp_path / "other.db", alembic_revision=alembic_revision)
    before = _sha(path)
    result = _invoke(*command, "--db", f"sqlite:///{path}")
    _one_line_error(result, "is not an alignbench store")
    assert _sha(path) == before
    assert not (tmp_path / "other.db-wal").exists()


def test_a_computing_score_refuses_another_programs_database_before_loading_anything(tmp_path: Path) -> None:
    path = _foreign(tmp_path / "other.db")
    before = _sha(path)
    result = _invoke("score", "--force", "--limit", "1", "--workers", "0", "--db", f"sqlite:///{path}")
    _one_line_error(result, "is not an alignbench store")
    assert _sha(path) == before


def _store_at_head(path: Path) -> str:
    url = f"sqlite:///{path}"
    open_store(url).close()
    con = sqlite3.connect(path)  # back to one plain file, so byte comparisons see every change
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    return url


@pytest.mark.parametrize("table", sorted(tables_at(head_revision())))
@pytest.mark.parametrize("command", [["report"], ["compare"], ["score", "--limit", "1"]])
def test_a_store_missing_one_of_its_tables_is_refused_as_damaged(tmp_path: Path, table: str, command) -> None:
    path = tmp_path / "s.db"
    url = _store_at_head(path)
    con = sqlite3.connect(path)
    con.execute("PRAGMA foreign_keys = OFF")
    con.execute(f"DROP TABLE {table}")
    con.commit()
    con.close()
    before = _sha(path)
    result = _invoke(*command, "--db", url)
    _one_line_error(result, "damaged")
    assert _sha(path) == before


def _store_at(path: Path, revision: str) -> str:
    url = f"sqlite:///{path}"
    engine = create_store_engine(url)
    upgrade_to_head(engine, url, revision=revision)
    engine.dispose()
    return url


def test_reading_commands_do_not_upgrade_an_older_store_and_upgrade_does(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    older = [r for r in revisions() if r != head_revision()][-1]
    url = _store_at(path, older)
    before = _sha(path)
    for command in (["report"], ["compare"], ["report", "--json"]):
        result = _invoke(*command, "--db", url)
        _one_line_error(result, f"schema revision {older}", f"alignbench upgrade --db {url}")
    assert _sha(path) == before

    upgraded = _invoke("upgrade", "--db", url)
    assert upgraded.exit_code == 0, upgraded.output
    assert f"from schema revision {older} to {head_revision()}" in upgraded.stdout
    engine = create_store_engine(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()
    again = _invoke("upgrade", "--db", url)
    assert again.exit_code == 0 and "already at schema revision" in again.stdout
    assert _invoke("report", "--db", url).exit_code == 0


def _sample_run_key(explainer: str = "threshold-gradcam") -> tuple[str, int]:
    """The key `alignbench score` gives the embedded default on the sample dataset, and its size."""
    from alignbench.datasets import open_dataset
    from alignbench.explainers import explainer_setting
    from alignbench.models import model_identity

    method, params = explainer_setting(explainer)
    dataset = open_dataset("sample")
    return q.run_key(model_identity("efficientnet_lite0").fingerprint, method, params, dataset.fingerprint, "aligned", ["spearman"]), len(
        dataset
    )


def test_a_cached_score_on_an_older_store_asks_for_upgrade_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    older = [r for r in revisions() if r != head_revision()][-1]
    url = _store_at(path, older)
    key, n = _sample_run_key()
    con = sqlite3.connect(path)  # a complete run as that revision's code wrote it (its columns only)
    con.execute(
        "INSERT INTO model (id, name, dcls, weights_source, weights_fingerprint, created_at) VALUES (1, 'efficientnet_lite0', 0, 'PyPI', 'fp', '2026-01-01')"
    )
    con.execute("INSERT INTO explainer_setting (id, method, params) VALUES (1, 'threshold-gradcam', '{\"threshold\":0.3}')")
    con.execute("INSERT INTO dataset (id, name, fingerprint, size, created_at) VALUES (1, 'sample', 'dfp', ?, '2026-01-01')", (n,))
    con.execute(
        "INSERT INTO run (id, key, model_id, explainer_id, dataset_id, protocol, metrics, status, n_images, compute_seconds, versions, created_at, updated_at) "
        "VALUES (1, ?, 1, 1, 1, 'aligned', 'spearman', 'complete', ?, 1.0, '{}', '2026-01-01', '2026-01-01')",
        (key, n),
    )
    con.executemany(
        "INSERT INTO image_score (run_id, image_index, image_id, spearman, created_at) VALUES (1, ?, ?, 0.5, '2026-01-01')",
        [(i, f"img{i}") for i in range(n)],
    )
    con.commit()
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    before = _sha(path)
    result = _invoke("score", "--db", url)
    _one_line_error(result, "alignbench upgrade")
    assert _sha(path) == before


def test_an_empty_file_is_reported_empty_and_not_turned_into_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    report = _invoke("report", "--db", f"sqlite:///{path}")
    assert report.exit_code == 0 and "no runs stored yet" in report.stdout
    compare = _invoke("compare", "--db", f"sqlite:///{path}")
    assert compare.exit_code == 1 and "Traceback" not in compare.output
    assert path.read_bytes() == b""


def test_reading_a_store_in_rollback_journal_mode_leaves_it_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    url = _store_at_head(path)
    before = _sha(path)
    assert _invoke("report", "--db", url).exit_code == 0
    assert _sha(path) == before
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_tables_per_revision_are_what_the_migrations_create(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    for revision in revisions():
        url = _store_at(tmp_path / f"{revision}.db", revision)
        engine = create_store_engine(url)
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == tables_at(revision)
        engine.dispose()
    assert alembic_config() is not None


def test_opening_a_store_at_head_does_not_import_alembic(tmp_path: Path) -> None:
    url = _store_at_head(tmp_path / "s.db")
    code = (
        "import sys; from alignbench.store import open_store; "
        f"open_store({url!r}, create=False, migrate=False).close(); open_store({url!r}).close(); "
        "assert 'alembic' not in sys.modules, 'alembic imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

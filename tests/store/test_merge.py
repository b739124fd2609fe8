"""`alignbench merge`: stores from machines without a shared server, unioned by identity.

DST runs on SQLite and on PostgreSQL (``store_url``); the sources are SQLite files, as a laptop or a
node without a server would write them.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.store import open_store
from alignbench.store.engine import create_store_engine
from alignbench.store.merge import merge_stores
from alignbench.store.migrate import first_revision, upgrade_to_head
from alignbench.store.tables import Thumbnail
from alignbench.testing.synthetic import add_run


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _query(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    finally:
        engine.dispose()


def _thumbnail(store, run_id: int, image: str, png: bytes) -> None:
    with store.session(write=True) as session:
        session.add(Thumbnail(run_id=run_id, image_id=image, kind="model", png=png, vmin=0.0, vmax=1.0))
        session.commit()


def _two_machines(tmp_path: Path) -> tuple[str, str]:
    """Machine A scored resnet50 on images 0-4 and its DCLS variant on 0-2; machine B resnet50 on 3-7
    (3 and 4 with the same values as A) and convnext_tiny on 0-7. Both stored the centre-bias reference."""
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    common = dict(dataset_size=8, family="resnet")
    with open_store(a) as store:
        run = add_run(store, model="resnet50", dcls=False, values=values[:5], status="partial", **common)
        add_run(store, model="resnet50", dcls=True, values=values[:3], status="partial", **common)
        add_run(store, model="centre-bias", dcls=False, values=values, method="centre-bias", params={"sigma_frac": 0.25}, dataset_size=8)
        _thumbnail(store, run, "img-000000", b"png-a")
    with open_store(b) as store:
        run = add_run(store, model="resnet50", dcls=False, values=values[3:], indices=range(3, 8), status="partial", **common)
        add_run(store, model="convnext_tiny", dcls=False, values=values, dataset_size=8, family="convnext")
        add_run(store, model="centre-bias", dcls=False, values=values, method="centre-bias", params={"sigma_frac": 0.25}, dataset_size=8)
        _thumbnail(store, run, "img-000007", b"png-b")
    return a, b


def test_merge_unions_by_identity_and_twice_changes_nothing(tmp_path: Path, store_url: str) -> None:
    a, b = _two_machines(tmp_path)
    before = {_sha(tmp_path / name) for name in ("a.db", "b.db")}
    first = merge_stores([a, b], store_url)
    assert [(s.models, s.runs, s.runs_matched, s.rows, s.rows_same, s.thumbnails) for s in first.sources] == [
        (3, 3, 0, 16, 0, 1),  # resnet50, resnet50+DCLS, centre bias; 5 + 3 + 8 rows
        (1, 1, 2, 11, 10, 1),  # convnext_tiny new; resnet50 adds images 5-7 (3 and 4 equal), centre bias all equal
    ]
    assert first.conflicts == [] and {_sha(tmp_path / name) for name in ("a.db", "b.db")} == before  # sources only read
    counts = (
        "SELECT (SELECT count(*) FROM model), (SELECT count(*) FROM explainer_setting), (SELECT count(*) FROM dataset), "
        "(SELECT count(*) FROM run), (SELECT count(*) FROM image_score), (SELECT count(*) FROM thumbnail)"
    )
    assert _query(store_url, counts) == [(4, 2, 1, 4, 27, 2)]
    # resnet50's run holds the union, one row per image, and is complete now (each machine had it partial)
    assert _query(
        store_url,
        "SELECT run.status, count(*), count(DISTINCT image_id) FROM run JOIN image_score ON image_score.run_id = run.id "
        "JOIN model ON model.id = run.model_id WHERE model.name = 'resnet50' AND NOT model.dcls GROUP BY run.status",
    ) == [("complete", 8, 8)]
    again = merge_stores([a, b], store_url)
    assert not any(s.changed for s in again.sources) and again.conflicts == []
    assert _query(store_url, counts) == [(4, 2, 1, 4, 27, 2)]


def test_conflicting_rows_are_listed_and_kept_unless_prefer_newer(tmp_path: Path, store_url: str) -> None:
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    with open_store(a) as store:
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.2, 0.3])
    with open_store(b) as store:  # written later: image 1 has another value (another machine, another library)
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.25, 0.3 + 1e-9])
    merge_stores([a], store_url)
    runner = CliRunner()
    kept = runner.invoke(app, ["merge", b, "--into", store_url, "--json"])
    assert kept.exit_code == 1, kept.output
    assert len(kept.stderr.strip().splitlines()) == 1 and "--prefer newer" in kept.stderr
    (conflict,) = json.loads(kept.stdout)["conflicts"]  # 0.3 vs 0.3 + 1e-9 is the same value
    assert (conflict["image_id"], conflict["columns"], conflict["kept"], conflict["other"], conflict["replaced"]) == (
        "img-000001",
        ["spearman"],
        {"spearman": 0.2},
        {"spearman": 0.25},
        False,
    )
    spearman = "SELECT image_id, spearman FROM image_score ORDER BY image_id"
    assert [v for _, v in _query(store_url, spearman)] == [0.1, 0.2, 0.3]
    table = runner.invoke(app, ["merge", b, "--into", store_url])
    assert table.exit_code == 1 and "conflicting rows" in table.stdout and "img-000001" in table.stdout
    newer = runner.invoke(app, ["merge", b, "--into", store_url, "--prefer", "newer", "--json"])
    assert newer.exit_code == 0, newer.output
    assert [c["replaced"] for c in json.loads(newer.stdout)["conflicts"]] == [True]
    assert [v for _, v in _query(store_url, spearman)] == [0.1, 0.25, 0.3]
    settled = runner.invoke(app, ["merge", b, "--into", store_url, "--prefer", "newer", "--json"])
    assert settled.exit_code == 0 and json.loads(settled.stdout)["conflicts"] == []


def test_a_store_at_the_first_revision_merges_into_head(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    url = f"sqlite:///{old}"
    engine = create_store_engine(url)
    upgrade_to_head(engine, url, revision=first_revision())
    when = datetime(2026, 1, 1)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO model (id, name, dcls, weights_source, weights_fingerprint, created_at) VALUES (1, 'convnext_tiny', 1, 'zenodo', 'fp', :w)"
            ),
            {"w": when},
        )
        conn.execute(text("INSERT INTO explainer_setting (id, method, params) VALUES (1, 'gradcam', '{}')"))
        conn.execute(
            text("INSERT INTO dataset (id, name, fingerprint, size, created_at) VALUES (1, 'clickme-val', 'dfp', 2, :w)"), {"w": when}
        )
        conn.execute(
            text(
                "INSERT INTO run (id, key, model_id, explainer_id, dataset_id, protocol, metrics, status, n_images, compute_seconds, versions, created_at, updated_at) "
                "VALUES (1, 'k', 1, 1, 1, 'paper', 'spearman', 'complete', 2, 1.5, '{}', :w, :w)"
            ),
            {"w": when},
        )
        for i in range(2):
            conn.execute(
                text("INSERT INTO image_score (run_id, image_index, image_id, spearman, created_at) VALUES (1, :i, :id, 0.5, :w)"),
                {"i": i, "id": f"img{i}", "w": when},
            )
    engine.dispose()
    before = _sha(old)
    into = f"sqlite:///{tmp_path / 'new.db'}"
    (merged,) = merge_stores([url], into).sources
    assert (merged.revision, merged.runs, merged.rows) == (first_revision(), 1, 2)
    assert _query(into, "SELECT key, precision, status FROM run") == [("k", "fp32", "complete")]
    assert _sha(old) == before  # not migrated: read as it is


@pytest.mark.parametrize("problem", ["newer", "unknown revision", "missing", "not a store", "itself", "hard link"])
def test_bad_sources_are_one_line_exit_2_and_nothing_merged(tmp_path: Path, problem: str) -> None:
    a, _ = _two_machines(tmp_path)
    into = tmp_path / "into.db"
    source = a
    if problem in ("newer", "unknown revision"):
        engine = create_engine(a)
        with engine.begin() as connection:
            revision = "9999" if problem == "newer" else "fffffffffff9"
            connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
        engine.dispose()
    elif problem == "missing":
        source = f"sqlite:///{tmp_path / 'nowhere.db'}"
    elif problem == "not a store":
        other = tmp_path / "other.db"
        import sqlite3

        con = sqlite3.connect(other)
        con.execute("CREATE TABLE notes (x TEXT)")
        con.close()
        source = f"sqlite:///{other}"
    elif problem == "itself":
        into = tmp_path / "a.db"
    elif problem == "hard link":  # the probe: `merge a.db b.db --into hard-link-of-b.db` wrote a.db's rows first
        into = tmp_path / "link.db"
        os.link(tmp_path / "b.db", into)
    before = _sha(into) if into.exists() else None
    result = CliRunner().invoke(app, ["merge", source, f"sqlite:///{tmp_path / 'b.db'}", "--into", f"sqlite:///{into}"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in result.output
    words = {
        "newer": "newer alignbench",
        "unknown revision": "which no alignbench release wrote",
        "hard link": "the same file",
        "missing": "no store at",
        "not a store": "not an alignbench store",
        "itself": "is the store merged into",
    }
    assert words[problem] in message
    assert (_sha(into) if into.exists() else None) == before  # DST untouched (not even created)


def test_merge_takes_plain_file_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe: `alignbench merge a.db b.db --into all.db` ended in 50 lines of SQLAlchemy ArgumentError."""
    _two_machines(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["merge", "a.db", "b.db", "--into", "all.db", "--json"])
    assert result.exit_code == 0, result.output
    assert [s["source"] for s in json.loads(result.stdout)["sources"]] == ["a.db", "b.db"]
    assert _query(f"sqlite:///{tmp_path / 'all.db'}", "SELECT count(*) FROM image_score") == [(27,)]


def test_prefer_newer_with_tied_times_says_neither_is_newer(tmp_path: Path) -> None:
    """The probe: rows created at the same moment in both stores; merge said --prefer newer takes the
    newer rows (which the user had passed) and exited 1."""
    a, b, into = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db", "into.db"))
    with open_store(a) as store:
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.2])
    with open_store(b) as store:
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.25])
    for url in (a, b):
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("UPDATE image_score SET created_at = '2026-01-01 00:00:00.000000'"))
        engine.dispose()
    merge_stores([a], into)
    before = _query(into, "SELECT image_id, spearman FROM image_score ORDER BY image_id")
    result = CliRunner().invoke(app, ["merge", b, "--into", into, "--prefer", "newer", "--json"])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "created at the same time in both stores, so neither is newer" in line
    assert "--prefer newer takes" not in line
    assert _query(into, "SELECT image_id, spearman FROM image_score ORDER BY image_id") == before

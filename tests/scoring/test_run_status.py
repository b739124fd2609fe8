"""Run status tells the truth: a killed run is interrupted, not running; runs without rows are hidden
unless asked for; a dataset is shown with its location; `alignbench runs` deletes what a user no
longer wants, rows first, in one transaction (issue 11, item 4)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alignbench.scoring.lifecycle import Heartbeat
from alignbench.store import open_store
from alignbench.store import queries as q
from alignbench.store.liveness import HEARTBEAT_TIMEOUT_S, process_alive, shown_status
from alignbench.store.tables import Run, Thumbnail
from alignbench.testing.cli import add_run, dump, invoke, one_line_error, plain_file, sha


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- liveness ---------------------------------------------------------------------------------------


def test_shown_status_follows_the_process_and_the_heartbeat() -> None:
    now = datetime.now(timezone.utc)
    fresh, stale = now - timedelta(seconds=5), now - timedelta(seconds=HEARTBEAT_TIMEOUT_S + 5)
    here, there = socket.gethostname(), "another-host"
    me, dead = os.getpid(), _dead_pid()
    assert shown_status("running", pid=me, host=here, heartbeat_at=fresh, now=now) == "running"
    assert shown_status("running", pid=dead, host=here, heartbeat_at=fresh, now=now) == "interrupted"
    assert shown_status("running", pid=me, host=here, heartbeat_at=stale, now=now) == "interrupted"  # a reused pid
    assert shown_status("running", pid=dead, host=there, heartbeat_at=fresh, now=now) == "running"  # not ours to probe
    assert shown_status("running", pid=dead, host=there, heartbeat_at=stale, now=now) == "interrupted"
    # a run written before heartbeats: judged by its last update; SQLite hands back naive UTC times
    assert shown_status("running", pid=None, host=None, heartbeat_at=None, updated_at=stale.replace(tzinfo=None), now=now) == "interrupted"
    assert shown_status("running", pid=None, host=None, heartbeat_at=None, updated_at=fresh.replace(tzinfo=None), now=now) == "running"
    for status in ("complete", "partial", "failed"):
        assert shown_status(status, pid=dead, host=here, heartbeat_at=stale, now=now) == status


def test_a_zombie_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while time.time() < deadline:  # exited, not yet reaped
        with open(f"/proc/{proc.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    assert not process_alive(proc.pid)
    proc.wait()
    assert not process_alive(proc.pid) and process_alive(os.getpid())


def test_the_heartbeat_thread_refreshes_the_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_id = add_run(url, key="k", n_images=3, n_rows=1, status="running")
    with open_store(url) as store:
        with Heartbeat(store, run_id, interval=0.05):
            time.sleep(0.5)
        with store.session() as session:
            first = session.get(Run, run_id).heartbeat_at
        time.sleep(0.2)
        with store.session() as session:
            assert session.get(Run, run_id).heartbeat_at == first  # stopped with the context
    assert first is not None


def test_a_killed_run_is_interrupted_not_running_and_resumes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignbench", "score", "--db", f"sqlite:///{db}", "--batch-size", "1", "--workers", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            if db.exists() and sqlite3.connect(db, timeout=5).execute("SELECT count(*) FROM image_score").fetchone()[0] >= 1:
                break
        except sqlite3.OperationalError:
            continue
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    proc.kill()  # SIGKILL: no cleanup, no final status
    proc.wait()
    con = sqlite3.connect(db)
    assert con.execute("SELECT status, pid, host, heartbeat_at IS NOT NULL FROM run").fetchone() == (
        "running",
        proc.pid,
        socket.gethostname(),
        1,
    )

    report = invoke("report", "--db", f"sqlite:///{db}", "--json")
    assert report.exit_code == 0, report.output
    assert [run["status"] for run in json.loads(report.stdout)["runs"]] == ["interrupted"]
    listed = invoke("runs", "list", "--db", f"sqlite:///{db}", "--json")
    assert [run["status"] for run in json.loads(listed.stdout)] == ["interrupted"]

    resumed = invoke("score", "--db", f"sqlite:///{db}", "--workers", "0", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["status"] == "complete"
    assert con.execute("SELECT status, pid FROM run WHERE id = 1").fetchone() == ("complete", os.getpid())


# --- runs without rows, datasets with their location ------------------------------------------------


@pytest.fixture()
def store_with_an_empty_run(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    add_run(url, key="full", n_images=4, n_rows=4, dataset="folder", dataset_fingerprint="f1", location="/data/cats")
    add_run(
        url,
        key="empty",
        n_images=4,
        n_rows=0,
        model="resnet18",
        dataset="folder",
        dataset_fingerprint="f1",
        location="/data/cats",
        status="partial",
    )
    plain_file(path)
    return url, path


def test_report_and_compare_hide_runs_without_rows_unless_all(store_with_an_empty_run) -> None:
    url, path = store_with_an_empty_run
    before = sha(path)
    shown = json.loads(invoke("report", "--db", url, "--json").stdout)["runs"]
    assert [run["run_id"] for run in shown] == [1]
    everything = json.loads(invoke("report", "--db", url, "--json", "--all").stdout)["runs"]
    assert [(run["run_id"], run["n_rows"]) for run in everything] == [(1, 4), (2, 0)]
    table = invoke("report", "--db", url)
    assert "1 run(s) with no stored row hidden" in table.stdout and "runs prune --empty" in table.stdout
    assert json.loads(invoke("report", "--db", url, "--json", "--run", "2").stdout)["runs"][0]["run_id"] == 2  # asked for by id
    compared = invoke("compare", "--db", url)
    assert compared.exit_code == 0, compared.output
    assert "resnet18" not in compared.stdout and "1 run(s) with no stored row hidden" in compared.stdout
    assert "resnet18" in invoke("compare", "--db", url, "--all").stdout
    assert sha(path) == before


def test_only_empty_runs_is_said_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_run(url, key="empty", n_images=4, n_rows=0, status="partial")
    report = invoke("report", "--db", url)
    assert report.exit_code == 0 and "no stored run has a row yet; 1 run(s) with no stored row hidden" in report.stdout
    one_line_error(invoke("compare", "--db", url), "1 run(s) with no stored row hidden", exit_code=1)


def test_two_folder_datasets_are_told_apart_by_their_location(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_run(url, key="a", n_images=2, n_rows=2, dataset="folder", dataset_fingerprint="f1", location="/data/cats")
    add_run(url, key="b", n_images=2, n_rows=2, dataset="folder", dataset_fingerprint="f2", location="/data/dogs")
    runs = json.loads(invoke("report", "--db", url, "--json").stdout)["runs"]
    assert [(run["dataset"], run["dataset_location"]) for run in runs] == [("folder", "/data/cats"), ("folder", "/data/dogs")]
    table = invoke("report", "--db", url).stdout
    assert "/data/cats" in table and "/data/dogs" in table
    compared = invoke("compare", "--db", url)
    assert "folder (/data/cats)" in compared.stdout and "folder (/data/dogs)" in compared.stdout
    assert {row["dataset_location"] for row in json.loads(invoke("compare", "--db", url, "--json").stdout)} == {"/data/cats", "/data/dogs"}


def test_the_embedded_sample_is_not_located(tmp_path: Path) -> None:
    from alignbench.datasets import dataset_label, open_dataset

    assert dataset_label("sample", str(open_dataset("sample").location)) == "sample"


# --- alignbench runs ----------------------------------------------------------------------------------


def _counts(path: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(path)
    return con.execute("SELECT (SELECT count(*) FROM run), (SELECT count(*) FROM image_score), (SELECT count(*) FROM thumbnail)").fetchone()


def _thumbnail(url: str, run_id: int) -> None:
    with open_store(url) as store, store.session(write=True) as session:
        session.add(Thumbnail(run_id=run_id, image_id="img0", kind="model", png=b"\x89PNG"))
        session.commit()


def test_runs_delete_removes_the_rows_thumbnails_and_run_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    keep = add_run(url, key="keep", n_images=5, n_rows=5)
    drop = add_run(url, key="drop", n_images=5, n_rows=3, model="resnet18")
    _thumbnail(url, drop)
    con = sqlite3.connect(path)
    kept_rows = con.execute("SELECT * FROM image_score WHERE run_id = ?", (keep,)).fetchall()
    result = invoke("runs", "delete", str(drop), "--db", url)
    assert result.exit_code == 0, result.output
    assert f"deleted 1 run(s) ({drop}) and their 3 image row(s)" in result.stdout
    assert _counts(path) == (1, 5, 0)
    assert con.execute("SELECT * FROM image_score WHERE run_id = ?", (keep,)).fetchall() == kept_rows


def test_runs_delete_with_an_unknown_id_deletes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    first = add_run(url, key="a", n_images=2, n_rows=2)
    before = dump(path)
    one_line_error(invoke("runs", "delete", str(first), "99", "--db", url), "no run 99", "nothing was deleted")
    assert dump(path) == before
    one_line_error(invoke("runs", "delete", "1", "--db", f"sqlite:///{tmp_path / 'none.db'}"), "nothing to delete")
    assert not (tmp_path / "none.db").exists()


def test_a_run_a_live_process_computes_is_neither_deleted_nor_pruned(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    live = add_run(url, key="live", n_images=4, n_rows=0, status="running")
    with open_store(url) as store, store.session(write=True) as session:
        q.record_process(session, session.get(Run, live), pid=os.getpid(), host=socket.gethostname())
        session.commit()
    assert json.loads(invoke("report", "--db", url, "--json", "--all").stdout)["runs"][0]["status"] == "running"
    one_line_error(invoke("runs", "delete", str(live), "--db", url), "still being computed by a live process")
    assert invoke("runs", "prune", "--empty", "--db", url).stdout.startswith("nothing to delete")
    assert _counts(path)[0] == 1


def test_runs_prune_empty_deletes_only_the_runs_without_rows(store_with_an_empty_run) -> None:
    url, path = store_with_an_empty_run
    listed = json.loads(invoke("runs", "list", "--empty", "--db", url, "--json").stdout)
    assert [run["run_id"] for run in listed] == [2]
    one_line_error(invoke("runs", "prune", "--db", url), "--empty")
    result = invoke("runs", "prune", "--empty", "--db", url)
    assert result.exit_code == 0 and "deleted 1 run(s) (2)" in result.stdout
    assert _counts(path) == (1, 4, 0)
    assert invoke("runs", "prune", "--empty", "--db", url).stdout.startswith("nothing to delete")


def test_runs_list_reads_only(store_with_an_empty_run) -> None:
    url, path = store_with_an_empty_run
    before = sha(path)
    result = invoke("runs", "list", "--db", url)
    assert result.exit_code == 0 and "folder (/data/cats)" in result.stdout and "0 / 4" in result.stdout
    assert sha(path) == before

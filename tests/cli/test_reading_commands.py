"""Every command that reads a store opens it read-only and shows what is stored (issue 25, items 2,
7, 8, 9 and the store ones of 12): never migrated, never switched to WAL, readable when the user may
only read it, a killed run interrupted everywhere, other metrics named."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from alignbench.store import open_store
from alignbench.store.engine import create_store_engine
from alignbench.store.migrate import head_revision, revisions, upgrade_to_head
from alignbench.testing.cli import invoke, one_line_error, plain_file, sha
from alignbench.testing.synthetic import add_run
from alignbench.testing.unprivileged import invoke_unprivileged, reachable_directory


def _reading_commands(tmp_path: Path) -> list[list[str]]:
    return [
        ["report"],
        ["report", "--json"],
        ["compare"],
        ["runs", "list"],
        ["models", "--trained"],
        ["study", "status", "demo"],
        ["report", "--html", str(tmp_path / "html"), "--gallery", "0"],
    ]


def _store(path: Path, *, metrics: tuple[str, ...] = ("spearman",)) -> Path:
    """A store with a baseline and a DCLS run (four images each), as one plain file (rollback journal)."""
    with open_store(f"sqlite:///{path}") as store:
        for dcls, values in ((False, [0.1, 0.2, 0.3, 0.4]), (True, [0.2, 0.3, 0.4, 0.6])):
            add_run(store, model="resnet50", dcls=dcls, values=values, metrics=metrics, family="resnet", param_count=10)
    plain_file(path)
    return path


def _older_store(path: Path) -> Path:
    older = [r for r in revisions() if r != head_revision()][-1]
    url = f"sqlite:///{path}"
    engine = create_store_engine(url)
    upgrade_to_head(engine, url, revision=older)
    engine.dispose()
    plain_file(path)
    return path


def _journal_mode(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize(
    "command", range(7), ids=["report", "report-json", "compare", "runs-list", "models-trained", "study-status", "report-html"]
)
def test_a_reading_command_refuses_an_older_store_and_leaves_it_byte_identical(tmp_path: Path, command: int) -> None:
    """The probe: `study status` and `report --html` migrated a 0002 store to 0003 and switched it to WAL."""
    path = _older_store(tmp_path / "old.db")
    before = sha(path)
    result = invoke(*_reading_commands(tmp_path)[command], "--db", str(path))
    one_line_error(result, "alignbench upgrade", "reading commands never change a store")
    assert sha(path) == before and _journal_mode(path) == "delete"


@pytest.mark.parametrize(
    "command", range(7), ids=["report", "report-json", "compare", "runs-list", "models-trained", "study-status", "report-html"]
)
def test_a_reading_command_keeps_the_journal_mode_and_every_byte(tmp_path: Path, command: int) -> None:
    path = _store(tmp_path / "s.db")
    before = sha(path)
    result = invoke(*_reading_commands(tmp_path)[command], "--db", str(path))
    assert result.exit_code == 0, result.output
    assert sha(path) == before and _journal_mode(path) == "delete"


def test_study_status_shows_a_killed_run_as_interrupted_like_runs_list(tmp_path: Path) -> None:
    from alignbench.datasets import open_dataset
    from alignbench.scoring.study import load_study
    from alignbench.testing.synthetic import add_request_run

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs: the run's scorer was killed
    db = tmp_path / "s.db"
    request = load_study("demo").requests()[0]
    with open_store(f"sqlite:///{db}") as store:
        run_id = add_request_run(store, request, open_dataset("sample"), [0.5, 0.25], status="running")
    con = sqlite3.connect(db)
    import socket

    con.execute("UPDATE run SET pid = ?, host = ?, heartbeat_at = CURRENT_TIMESTAMP WHERE id = ?", (dead.pid, socket.gethostname(), run_id))
    con.commit()
    con.close()
    status = invoke("study", "status", "demo", "--db", str(db), "--json")
    assert status.exit_code == 0, status.output
    (cell,) = [c for c in json.loads(status.stdout)["cells"] if c["run_id"] == run_id]
    listed = invoke("runs", "list", "--db", str(db), "--json")
    (run,) = [r for r in json.loads(listed.stdout) if r["run_id"] == run_id]
    assert cell["run_status"] == run["status"] == "interrupted"
    table = invoke("study", "status", "demo", "--db", str(db))
    assert "(interrupted)" in table.stdout and "running" not in table.stdout


def _read_only_copy(source: Path, directory: Path, *, wal: bool) -> Path:
    directory.mkdir()
    path = directory / "s.db"
    shutil.copy(source, path)
    if wal:
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        con.close()  # the last connection checkpoints and removes the -wal and -shm files
    path.chmod(0o444)
    return path


@pytest.mark.parametrize("where", ["chmod 444", "WAL in a read-only directory"])
@pytest.mark.parametrize(
    "command", range(7), ids=["report", "report-json", "compare", "runs-list", "models-trained", "study-status", "report-html"]
)
def test_a_store_the_user_may_only_read_is_read(tmp_path: Path, where: str, command: int) -> None:
    """The probe: on a chmod 444 store every reading command said "not readable and writable by you"."""
    source = _store(tmp_path / "source.db")
    with reachable_directory() as shared:
        directory = shared / "ro"
        path = _read_only_copy(source, directory, wal=where != "chmod 444")
        out = shared / "out"
        out.mkdir()
        out.chmod(0o777)  # the unprivileged user writes the HTML report here
        arguments = [a.replace(str(tmp_path / "html"), str(out / "html")) for a in _reading_commands(tmp_path)[command]]
        if where != "chmod 444":
            directory.chmod(0o555)
        before = sha(path)
        result = invoke_unprivileged(
            *arguments, "--db", str(path), warm=lambda: invoke(*_reading_commands(tmp_path)[command], "--db", str(source))
        )
        assert result.exit_code == 0, result.output
        assert "error" not in result.stderr
        assert sha(path) == before


def test_merge_reads_a_wal_store_in_a_read_only_directory(tmp_path: Path) -> None:
    """The probe: "attempt to write a readonly database"."""
    source = _store(tmp_path / "source.db")
    with reachable_directory() as shared:
        directory = shared / "ro"
        path = _read_only_copy(source, directory, wal=True)
        directory.chmod(0o555)
        out = shared / "out"
        out.mkdir()
        out.chmod(0o777)
        result = invoke_unprivileged(
            "merge",
            str(path),
            "--into",
            str(out / "all.db"),
            "--json",
            warm=lambda: invoke("merge", str(source), "--into", str(tmp_path / "w.db")),
        )
        assert result.exit_code == 0, result.output
        assert [s["rows"] for s in json.loads(result.stdout)["sources"]] == [8]
        assert sorted(p.name for p in directory.iterdir()) == ["s.db"]


@pytest.mark.parametrize("command", [["report"], ["compare"], ["report", "--html", "HTML"]], ids=["report", "compare", "report-html"])
def test_runs_with_only_other_metrics_are_named_not_called_nothing_stored(tmp_path: Path, command: list[str]) -> None:
    """The probe: the README's MoCo workflow stores deletion and insertion only; `report` said "no runs
    stored yet", `report --html` wrote an empty page with exit 0, `compare` exited 1."""
    path = _store(tmp_path / "s.db", metrics=("deletion", "insertion"))
    before = sha(path)
    arguments = [a.replace("HTML", str(tmp_path / "html")) for a in command]
    result = invoke(*arguments, "--db", str(path))
    one_line_error(result, "no stored run has the metric 'spearman'", "deletion, insertion", "--metric deletion")
    assert sha(path) == before and not (tmp_path / "html").exists()
    assert invoke(*arguments, "--db", str(path), "--metric", "deletion").exit_code == 0


@pytest.mark.parametrize("store", ["missing", "empty"])
def test_runs_list_on_a_missing_or_empty_store_says_so_like_report(tmp_path: Path, store: str) -> None:
    """The probe: `runs list` printed `error: no store at ...` and exited 0."""
    path = tmp_path / "s.db"
    if store == "empty":
        path.write_bytes(b"")
    result = invoke("runs", "list", "--db", str(path))
    report = invoke("report", "--db", str(path))
    assert result.exit_code == report.exit_code == 0, result.output
    assert result.stderr == "" and result.stdout == report.stdout
    assert len(result.stdout.strip().splitlines()) == 1 and "no runs stored yet" in result.stdout
    assert json.loads(invoke("runs", "list", "--db", str(path), "--json").stdout) == []
    assert path.exists() == (store == "empty")


def test_the_score_it_hint_is_shell_quoted(tmp_path: Path) -> None:
    """The probe: a folder dataset in "my images" gave `--data-dir /x/my images`, two words to a shell."""
    import re
    import shlex

    folder = str(tmp_path / "my images; rm -rf ~")
    path = tmp_path / "s.db"
    with open_store(f"sqlite:///{path}") as store:  # a baseline without its DCLS run: compare says what to run
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.2, 0.3], dataset="folder", location=folder)
    result = invoke("compare", "--db", str(path))
    assert result.exit_code == 0, result.output
    (hint,) = re.findall(r"run `(alignbench score [^`]*)` to compare", " ".join(result.output.split("\n")))
    words = shlex.split(hint)
    assert words[:4] == ["alignbench", "score", "resnet50", "--dcls"]
    assert words[words.index("--data-dir") + 1] == folder
    no_match = invoke("report", "--db", str(path), "--dataset", "my set")
    assert "--dataset 'my set'" in no_match.output


def test_alignbench_db_takes_a_path_and_its_errors_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe: `ALIGNBENCH_DB=/path alignbench report` said "--db '/path' is not a database URL"."""
    path = _store(tmp_path / "s.db")
    monkeypatch.setenv("ALIGNBENCH_DB", str(path))
    assert "resnet50" in invoke("runs", "list").stdout
    monkeypatch.setenv("ALIGNBENCH_DB", str(tmp_path))  # a directory
    line = one_line_error(invoke("report"), "ALIGNBENCH_DB=", "is a directory")
    assert "--db '" not in line


def test_report_html_on_a_store_it_may_not_write_keeps_galleries_without_maps(tmp_path: Path) -> None:
    """Its one write (the thumbnails of the galleries) is refused by the store's permissions: the page
    is written, each gallery saying why its maps are missing, and the store is untouched."""
    source = _store(tmp_path / "source.db")
    with reachable_directory() as shared:
        path = _read_only_copy(source, shared / "ro", wal=False)
        out = shared / "out"
        out.mkdir()
        out.chmod(0o777)
        before = sha(path)
        result = invoke_unprivileged(
            "report",
            "--html",
            str(out / "html"),
            "--gallery",
            "2",
            "--db",
            str(path),
            warm=lambda: (
                invoke("report", "--html", str(tmp_path / "warm"), "--gallery", "2", "--db", str(tmp_path / "copy.db"))
                if shutil.copy(source, tmp_path / "copy.db")
                else None
            ),
        )
        assert result.exit_code == 0, result.output
        assert sha(path) == before
        page = (out / "html" / "index.html").read_text()
        assert "cannot be stored here" in page

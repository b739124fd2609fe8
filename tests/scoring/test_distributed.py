"""Several processes on one run through torchrun (gloo on this CPU machine): the same rows as one
process, written once each; a rank that dies leaves a run the next launch finishes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignbench.distributed import Ranks, launched_ranks, my_share
from alignbench.testing.tolerance import EPS64, float32_bound

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _alignbench(*args: str, processes: int = 1, **popen) -> subprocess.Popen:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        if processes > 1
        else [sys.executable]
    )
    return subprocess.Popen([*launcher, "-m", "alignbench", *args], env=ENV, text=True, **popen)


def _run(*args: str, processes: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = _alignbench(*args, processes=processes, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _rows(db: Path) -> dict[tuple[str, str], tuple]:
    """(model, image id) → (target, prediction, confidence, spearman, deletion) of every stored row."""
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT model.name, image_id, target, prediction, confidence, spearman, deletion FROM image_score "
        "JOIN run ON run.id = image_score.run_id JOIN model ON model.id = run.model_id"
    ).fetchall()
    con.close()
    return {(name, image): values for name, image, *values in rows}


def _assert_same_rows(one: dict, two: dict) -> None:
    """Equal to the bit: each image alone in its batch (--batch-size 1) goes through the same float32
    operations in the same order in either launch (one thread, the same kernels; torch aligns every
    buffer to 64 bytes, so even an alignment-dependent BLAS path is the same). With batches that differ
    (one process's [0, 1] against a rank's [0, 2]) no rounding bound would be worth checking: the
    maps' propagated network_relative bound (efficientnet_lite0, threshold-gradcam) is ~3% of their range,
    and bounding the rank change by the pairs that close (|Δρ| ≤ 2‖c‖/‖r̃‖, c_i the values within twice
    the bound of the i-th) gives more than 1 for the Spearman of 50k near-tied values."""
    assert one.keys() == two.keys()
    for key, values in one.items():
        assert values == two[key], key


def test_ranks_come_from_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not launched_ranks().distributed and launched_ranks().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert launched_ranks() == Ranks(rank=6, world_size=4, local_rank=2)
    assert my_share(Ranks(), lambda: [3, 5, 8]) == [3, 5, 8]


def test_two_cpu_processes_store_exactly_the_rows_of_one(tmp_path: Path) -> None:
    args = ["score", "--limit", "6", "--batch-size", "1", "--workers", "0", "--json"]  # batch 1: see _assert_same_rows
    one = _run(*args, "--db", f"sqlite:///{tmp_path / 'one.db'}")
    assert one.returncode == 0, one.stderr
    two = _run(*args, "--db", f"sqlite:///{tmp_path / 'two.db'}", processes=2)
    assert two.returncode == 0, two.stderr
    # rank 0 alone prints, once every rank's rows are in: the summary covers all six images
    summary = json.loads(two.stdout)
    assert (summary["n_images"], summary["n_scored"], summary["computed_images"], summary["status"]) == (6, 6, 6, "partial")  # 6 of 10
    # the same six values, summed in another order: float64 rounding of a 6-term mean of values ≤ 1 (was 1e-6)
    mean_atol = float32_bound(6 + 2, 1.0, eps=EPS64)
    assert summary["mean_spearman"] == pytest.approx(json.loads(one.stdout)["mean_spearman"], rel=0, abs=mean_atol)
    rows_one, rows_two = _rows(tmp_path / "one.db"), _rows(tmp_path / "two.db")
    assert len(rows_one) == 12  # six images of the model and six of the centre-bias reference
    _assert_same_rows(rows_one, rows_two)
    con = sqlite3.connect(tmp_path / "two.db")
    assert con.execute("SELECT count(*), count(DISTINCT run_id || image_id) FROM image_score").fetchone() == (12, 12)
    assert con.execute("SELECT group_concat(status) FROM run").fetchone() == ("partial,partial",)
    con.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _rank_pid(launcher: int, rank: int) -> int | None:
    for child in _children(launcher):
        try:
            environ = (Path("/proc") / str(child) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return child
    return None


def test_a_rank_that_dies_leaves_the_run_resumable(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    # deletion with 16 steps: 17 forward passes per image, slow enough to kill a rank mid-run
    args = ["score", "--batch-size", "1", "--workers", "0", "--metric", "spearman,deletion", "--steps", "16", "--db", f"sqlite:///{db}"]
    launch = _alignbench(*args, processes=2, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, rows, victim = time.time() + 300, 0, None
    while time.time() < deadline and launch.poll() is None:
        time.sleep(0.2)
        try:
            rows = sqlite3.connect(db, timeout=5).execute("SELECT count(*) FROM image_score").fetchone()[0] if db.exists() else 0
        except sqlite3.OperationalError:
            rows = 0
        if rows >= 2:
            victim = _rank_pid(launch.pid, 1)
            break
    assert victim is not None, f"no rank to kill (rows {rows}): {launch.stderr.read() if launch.poll() is not None else ''}"
    os.kill(victim, signal.SIGKILL)
    _, err = launch.communicate(timeout=120)
    assert launch.returncode != 0  # torchrun reports the dead rank and stops the others
    # rank 0, stopped by torchrun or left alone at a collective, says so in one line (no traceback of ours)
    assert "rank 0 stopped: torchrun ends every process" in err or "rank 0: another process of this launch is gone" in err, err
    con = sqlite3.connect(db)
    stored, distinct = con.execute("SELECT count(*), count(DISTINCT image_id) FROM image_score WHERE run_id = 1").fetchone()
    assert 1 <= stored < 10 and stored == distinct
    con.close()

    again = _run(*args, "--json", processes=2)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["run_id"], summary["n_scored"], summary["status"]) == (1, 10, "complete")
    assert summary["computed_images"] == 10 - stored
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*), count(DISTINCT image_id) FROM image_score WHERE run_id = 1").fetchone() == (10, 10)
    con.close()


def test_a_study_under_torchrun_stores_every_run_and_prints_once(tmp_path: Path) -> None:
    study = tmp_path / "study.toml"
    study.write_text(
        '[[model]]\nname = "efficientnet_lite0"\ndcls = [false, true]\n\n[[explainer]]\nmethod = "gradcam"\n\n'
        '[[dataset]]\nname = "sample"\n\n[run]\nlimit = 3\nbatch_size = 2\n'
    )
    db = tmp_path / "s.db"
    done = _run("study", "run", str(study), "--workers", "0", "--db", f"sqlite:///{db}", "--json", processes=2)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # one document: rank 0 alone prints
    assert [(r["dcls"], r["n_scored"], r["computed_images"]) for r in document["runs"]] == [(False, 3, 3), (True, 3, 3)]
    assert len(document["compare"]) == 1
    con = sqlite3.connect(db)
    per_run = con.execute("SELECT run_id, count(*), count(DISTINCT image_id) FROM image_score GROUP BY run_id").fetchall()
    con.close()
    assert [(n, distinct) for _, n, distinct in per_run] == [(3, 3)] * 3  # two model runs and the centre-bias reference

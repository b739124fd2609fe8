"""Scores cached before constant maps became undefined (issue 25): a run whose rows an older scorer
wrote (no ``versions["scorer"]``) is marked by ``runs list`` and ``upgrade``, and ``score`` recomputes
just its rows that hold a value — a stored 0.048 for a constant heatmap becomes NULL with the reason."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.datasets import SAMPLE_DIR
from alignbench.store.recheck import SCORER_REVISION

runner = CliRunner()
CONSTANT_REASON = "spearman: the reference map is constant in its heatmap file"


def _folder(root: Path) -> Path:
    """images/ (sample photos) and heatmaps/: one constant map (0.5 everywhere), two that vary."""
    (root / "images").mkdir(parents=True)
    (root / "heatmaps").mkdir()
    yy, xx = np.mgrid[:48, :64]
    maps = {
        "a-constant": np.full((48, 64), 0.5, np.float32),
        "b-varies": np.exp(-((yy - 24) ** 2 + (xx - 21) ** 2) / 150.0).astype(np.float32),
        "c-varies": np.exp(-((yy - 10) ** 2 + (xx - 50) ** 2) / 90.0).astype(np.float32),
    }
    for source, (stem, heatmap) in zip(sorted(SAMPLE_DIR.glob("*.JPEG")), maps.items()):
        Image.open(source).convert("RGB").resize((64, 48)).save(root / "images" / f"{stem}.png")
        np.save(root / "heatmaps" / f"{stem}.npy", heatmap)
    return root


def _score(root: Path, db: str):
    args = ["score", "test_efficientnet", "--no-pretrained", "--dataset", "folder", "--data-dir", str(root)]
    return runner.invoke(app, [*args, "--db", db, "--workers", "0", "--batch-size", "3", "--json"])


def _rows(path: Path, run_id: int) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT image_id, spearman, skip_reason FROM image_score WHERE run_id = ? ORDER BY image_index", (run_id,)
        ).fetchall()


def test_a_run_of_an_older_scorer_is_marked_and_score_recomputes_just_its_valued_rows(tmp_path) -> None:
    root, path = _folder(tmp_path / "f"), tmp_path / "s.db"
    db = f"sqlite:///{path}"
    first = _score(root, db)
    assert first.exit_code == 0, first.output
    run_id = json.loads(first.stdout)["run_id"]
    now = _rows(path, run_id)
    assert now[0][1:] == (None, CONSTANT_REASON) and now[1][1] is not None and now[2][1] is not None
    # what the older scorer left: a value for the constant map (Spearman ranked the resize's rounding),
    # and no scorer revision in the run's versions
    with sqlite3.connect(path) as connection:
        versions = json.loads(connection.execute("SELECT versions FROM run WHERE id = ?", (run_id,)).fetchone()[0])
        assert versions["scorer"] == SCORER_REVISION
        del versions["scorer"]
        connection.execute("UPDATE run SET versions = ? WHERE id = ?", (json.dumps(versions), run_id))
        connection.execute("UPDATE image_score SET spearman = 0.048, skip_reason = NULL WHERE image_id = 'a-constant'")

    listed = runner.invoke(app, ["runs", "list", "--db", db, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [run["recheck"] for run in json.loads(listed.stdout) if run["run_id"] == run_id] == [True]
    upgraded = runner.invoke(app, ["upgrade", "--db", db])
    assert upgraded.exit_code == 0 and f"1 run(s) ({run_id})" in upgraded.stdout, upgraded.output

    again = _score(root, db)
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert not summary["cached"] and summary["computed_images"] == 3  # every row that held a value, none twice
    assert _rows(path, run_id) == now  # the constant map is undefined again; the others computed anew, equal
    listed = json.loads(runner.invoke(app, ["runs", "list", "--db", db, "--json"]).stdout)
    assert [run["recheck"] for run in listed if run["run_id"] == run_id] == [False]
    assert json.loads(_score(root, db).stdout)["cached"]


def test_rows_an_older_scorer_left_undefined_are_not_recomputed(tmp_path) -> None:
    root, path = _folder(tmp_path / "f"), tmp_path / "s.db"
    db = f"sqlite:///{path}"
    run_id = json.loads(_score(root, db).stdout)["run_id"]
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE run SET versions = '{}' WHERE id = ?", (run_id,))
    summary = json.loads(_score(root, db).stdout)
    assert summary["computed_images"] == 2  # the constant map's row already had its reason
    assert _rows(path, run_id)[0][1:] == (None, CONSTANT_REASON)

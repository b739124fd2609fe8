"""`alignbench score` end to end on the embedded default (real efficientnet_lite0 weights, real images)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.testing.tolerance import EPS64, float32_bound

REQUIRED_KEYS = {
    "run_id",
    "model",
    "dcls",
    "explainer",
    "dataset",
    "protocol",
    "n_images",
    "n_scored",
    "n_skipped",
    "mean_spearman",
    "alignment_score",
    "cached",
    "metrics",
}


def _score(db: Path, *args: str) -> dict:
    result = CliRunner().invoke(app, ["score", *args, "--db", f"sqlite:///{db}", "--json", "--workers", "0"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alignbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_embedded_default_scores_then_answers_from_the_store(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    first = _score(db)
    assert REQUIRED_KEYS <= first.keys()
    assert (first["model"], first["dataset"], first["explainer"], first["protocol"]) == (
        "efficientnet_lite0",
        "sample",
        "threshold-gradcam",
        "aligned",
    )
    assert first["cached"] is False
    assert first["n_images"] == 10 and first["n_scored"] + first["n_skipped"] == 10
    assert -1.0 <= first["mean_spearman"] <= 1.0
    assert first["metrics"] == {"spearman": first["mean_spearman"]}  # one value, reported twice
    assert first["alignment_score"] is None  # the sample dataset has no human ceiling
    con = sqlite3.connect(db)
    rows = con.execute("SELECT count(*), count(DISTINCT image_id) FROM image_score WHERE run_id = ?", (first["run_id"],)).fetchone()
    assert rows == (10, 10)
    # the model-free centre-bias reference was stored on the same images, for compare/report
    (reference,) = con.execute(
        "SELECT count(*) FROM image_score JOIN run ON run.id = run_id JOIN model ON model.id = run.model_id "
        "WHERE model.name = 'centre-bias'"
    ).fetchone()
    assert reference == 10

    # the same command again: read from the store, in a fresh process that never imports torch
    started = time.perf_counter()
    proc = _cli("score", "--db", f"sqlite:///{db}", "--json", env={"PYTHONWARNINGS": "ignore"})
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout)
    assert second["cached"] is True and second["run_id"] == first["run_id"]
    # the same ten stored values averaged again, maybe in another order: float64 rounding of a 10-term mean
    assert second["mean_spearman"] == pytest.approx(first["mean_spearman"], rel=0, abs=float32_bound(10 + 2, 1.0, eps=EPS64))
    assert elapsed < 10  # generous: the point is that no model runs (the benchmark measures it)
    code = (
        "import sys; from alignbench.scoring import score, ScoreRequest; "
        f"r = score(ScoreRequest(), db='sqlite:///{db}'); assert r.cached; "
        "assert 'torch' not in sys.modules, 'cached score imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_limit_force_and_threshold_are_separate_runs(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    # --batch-size 1: every image alone, so a recomputation goes through the same float32 operations in
    # the same order as the first (equal to the bit; with other batches no rounding bound on a Spearman
    # of near-tied map values would be worth checking, see tests/scoring/test_distributed.py)
    one = ("--batch-size", "1")
    three = _score(db, "--limit", "3", *one)
    assert three["n_images"] == 3 and three["cached"] is False
    again = _score(db, "--limit", "3", *one)
    assert again["cached"] is True
    # --limit 5 reuses the three stored images and computes two
    five = _score(db, "--limit", "5", *one)
    assert five["run_id"] == three["run_id"] and five["n_images"] == 5 and five["cached"] is False
    forced = _score(db, "--limit", "5", "--force", *one)
    # the same five values, averaged maybe in another order: float64 rounding of a 5-term mean (was abs=1e-6)
    mean_atol = float32_bound(5 + 2, 1.0, eps=EPS64)
    assert forced["cached"] is False and forced["mean_spearman"] == pytest.approx(five["mean_spearman"], rel=0, abs=mean_atol)
    other = _score(db, "--limit", "3", "--threshold", "0.5")
    assert other["run_id"] != three["run_id"]
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM image_score WHERE run_id = ?", (three["run_id"],)).fetchone() == (5,)


def test_killed_run_resumes_with_one_row_per_image(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignbench", "score", "--db", f"sqlite:///{db}", "--batch-size", "1", "--workers", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    rows = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                rows = sqlite3.connect(db, timeout=5).execute("SELECT count(*) FROM image_score").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0
            if rows >= 2:
                break
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    proc.kill()  # SIGKILL: no cleanup, no final status
    proc.wait()
    stored = sqlite3.connect(db).execute("SELECT count(*) FROM image_score").fetchone()[0]
    assert 2 <= stored < 10
    resumed = _score(db)
    assert resumed["cached"] is False and resumed["n_images"] == 10
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*), count(DISTINCT image_id) FROM image_score WHERE run_id = ?", (resumed["run_id"],)).fetchone() == (
        10,
        10,
    )
    assert con.execute("SELECT status FROM run WHERE id = ?", (resumed["run_id"],)).fetchone() == ("complete",)


@pytest.mark.parametrize(
    "args, message",
    [
        (["no_such_model_xyz"], "no_such_model_xyz"),
        (["--protocol", "sideways"], "protocol"),
        (["--metric", "nonsense"], "nonsense"),
        (["--dataset", "nope"], "nope"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["score", *args, "--db", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def _sample_arrays(n: int):
    import numpy as np
    from PIL import Image

    from alignbench.datasets import open_dataset

    sample = open_dataset("sample")
    folder = Path(sample.location)
    images = sorted(folder.glob("*.JPEG"))[:n]
    rng = np.random.default_rng(0)
    out = []
    for path in images:
        image = np.asarray(Image.open(path).convert("RGB").resize((256, 256), Image.BILINEAR))
        yy, xx = np.mgrid[:256, :256]
        cy, cx = rng.integers(64, 192, size=2)
        heatmap = (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 40.0**2))).astype(np.uint8)
        out.append((path.stem, image, heatmap))
    return out


def test_clickme_shards_written_here_are_scored_and_a_corrupt_shard_keeps_stored_rows(tmp_path: Path) -> None:
    from alignbench.datasets import CLICKME_HUMAN_CEILING, ClickMeRecord, write_clickme_shard

    shards = tmp_path / "shards"
    shards.mkdir()
    arrays = _sample_arrays(6)
    labels = [1, 2, 3, 4, 5, 6]
    for shard, chunk in enumerate((slice(0, 3), slice(3, 6))):
        records = [ClickMeRecord(image, heatmap, label) for (_, image, heatmap), label in zip(arrays[chunk], labels[chunk])]
        assert write_clickme_shard(shards / f"val-{shard}.tfrecords", records) == 3
    db = tmp_path / "s.db"
    result = _score(db, "--dataset", "clickme-val", "--data-dir", str(shards), "--explainer", "gradcam")
    assert result["n_images"] == 6 and result["dataset"] == "clickme-val"
    assert result["alignment_score"] == result["mean_spearman"] / CLICKME_HUMAN_CEILING  # the same float64 quotient
    con = sqlite3.connect(db)
    assert con.execute(
        "SELECT group_concat(target) FROM (SELECT target FROM image_score WHERE run_id = ? ORDER BY image_index)", (result["run_id"],)
    ).fetchone() == ("1,2,3,4,5,6",)

    # corrupt one byte in the middle of the second shard: one clear line naming the file and offset,
    # exit 2, and the rows already stored are all still there
    shard = shards / "val-1.tfrecords"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = CliRunner().invoke(app, ["score", "--dataset", "clickme-val", "--data-dir", str(shards), "--db", f"sqlite:///{db}"])
    assert bad.exit_code == 2, bad.output
    assert "val-1.tfrecords" in bad.output and "byte" in bad.output
    assert con.execute("SELECT count(*) FROM image_score WHERE run_id = ?", (result["run_id"],)).fetchone() == (6,)


def test_folder_without_labels_explains_the_top1_class(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "heatmaps").mkdir()
    for stem, image, heatmap in _sample_arrays(3):
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(heatmap).save(root / "heatmaps" / f"{stem}.png")
    db = tmp_path / "s.db"
    result = _score(db, "--dataset", "folder", "--data-dir", str(root))
    assert result["n_images"] == 3 and result["n_scored"] == 3
    rows = sqlite3.connect(db).execute("SELECT target, prediction FROM image_score WHERE run_id = ?", (result["run_id"],)).fetchall()
    assert len(rows) == 3 and all(target == prediction for target, prediction in rows)


def test_box_and_faithfulness_metrics_are_stored_beside_spearman(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    metrics = "spearman,pointing-game,energy-in-box,average-drop"
    result = _score(db, "--limit", "3", "--metric", metrics)
    assert set(result["metrics"]) == set(metrics.split(","))
    assert 0.0 <= result["metrics"]["pointing-game"] <= 1.0
    assert 0.0 <= result["metrics"]["energy-in-box"] <= 1.0
    assert 0.0 <= result["metrics"]["average-drop"] <= 100.0
    rows = (
        sqlite3.connect(db)
        .execute("SELECT pointing_game, energy_in_box, average_drop, spearman FROM image_score WHERE run_id = ?", (result["run_id"],))
        .fetchall()
    )
    assert len(rows) == 3 and all(None not in row for row in rows)
    assert _score(db, "--limit", "3", "--metric", metrics)["cached"] is True


def test_box_metric_on_a_dataset_without_boxes_is_refused(tmp_path: Path) -> None:
    from alignbench.datasets import ClickMeRecord, write_clickme_shard

    shards = tmp_path / "shards"
    shards.mkdir()
    write_clickme_shard(shards / "val-0.tfrecords", [ClickMeRecord(image, heatmap, 1) for _, image, heatmap in _sample_arrays(1)])
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--dataset",
            "clickme-val",
            "--data-dir",
            str(shards),
            "--metric",
            "pointing-game",
            "--db",
            f"sqlite:///{tmp_path / 's.db'}",
        ],
    )
    assert result.exit_code == 2
    assert "needs bounding boxes" in result.output and "Traceback" not in result.output


def test_deletion_steps_are_part_of_the_run(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    coarse = _score(db, "--limit", "2", "--metric", "deletion,insertion", "--steps", "4")
    assert 0.0 <= coarse["metrics"]["deletion"] <= 1.0 and 0.0 <= coarse["metrics"]["insertion"] <= 1.0
    assert _score(db, "--limit", "2", "--metric", "deletion,insertion", "--steps", "4")["cached"] is True
    finer = _score(db, "--limit", "2", "--metric", "deletion,insertion", "--steps", "8")
    assert finer["run_id"] != coarse["run_id"] and finer["cached"] is False
    # --steps does not touch a run without deletion/insertion
    plain = _score(db, "--limit", "2")
    assert _score(db, "--limit", "2", "--steps", "8")["run_id"] == plain["run_id"]
    bad = CliRunner().invoke(app, ["score", "--metric", "deletion", "--steps", "0", "--db", f"sqlite:///{db}"])
    assert bad.exit_code == 2 and "--steps" in bad.output


def test_workers_started_before_the_model_loads_serve_only_the_missing_images(tmp_path: Path, monkeypatch) -> None:
    # The scorer starts its DataLoader workers from the planned run before the model loads; they
    # must skip exactly the stored images, and be replaced when the loaded model's fingerprint turns
    # out to differ from the planned one (as for hub weights that were not cached yet).
    from dataclasses import replace

    from alignbench import models
    from alignbench.scoring import ScoreRequest, score

    db = f"sqlite:///{tmp_path / 's.db'}"
    request = ScoreRequest(limit=3, workers=1, batch_size=2)
    first = score(request, db=db)
    five = score(replace(request, limit=5), db=db)
    assert five.run_id == first.run_id and five.computed_images == 2 and five.n_scored == 5
    planned = models.model_identity
    monkeypatch.setattr(models, "model_identity", lambda *a, **k: replace(planned(*a, **k), fingerprint="not-the-loaded-one"))
    seven = score(replace(request, limit=7), db=db)
    assert seven.run_id == first.run_id and seven.computed_images == 2 and seven.n_scored == 7
    con = sqlite3.connect(tmp_path / "s.db")
    assert con.execute("SELECT count(*), count(DISTINCT image_id) FROM image_score WHERE run_id = ?", (first.run_id,)).fetchone() == (7, 7)


def test_scores_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    # Dataset items are made on one torch thread wherever they are made (torch's bilinear resize
    # differs in the last bits with the thread count), so the main process (--workers 0) and a
    # DataLoader worker hand the model the same inputs, and the stored scores are equal.
    from dataclasses import replace

    from alignbench.scoring import ScoreRequest, score

    request = ScoreRequest(limit=4, batch_size=2, workers=0)
    runs = {}
    for workers in (0, 1):
        db = tmp_path / f"w{workers}.db"
        run = score(replace(request, workers=workers), db=f"sqlite:///{db}")
        con = sqlite3.connect(db)
        runs[workers] = con.execute(
            "SELECT image_id, spearman, confidence FROM image_score WHERE run_id = ? ORDER BY image_id", (run.run_id,)
        ).fetchall()
    assert len(runs[0]) == 4 and runs[0] == runs[1]


def test_a_label_outside_the_model_classes_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    from alignbench.datasets import ClickMeRecord, write_clickme_shard

    shards = tmp_path / "shards"
    shards.mkdir()
    records = [ClickMeRecord(image, heatmap, label) for (_, image, heatmap), label in zip(_sample_arrays(2), [3, 1000])]
    write_clickme_shard(shards / "val-0.tfrecords", records)
    db = tmp_path / "s.db"
    result = CliRunner().invoke(
        app, ["score", "--dataset", "clickme-val", "--data-dir", str(shards), "--db", f"sqlite:///{db}", "--workers", "1"]
    )
    assert result.exit_code == 2, result.output
    assert "image val-0:1 has label 1000, outside the model's 1000 classes" in result.output
    assert "Traceback" not in result.output
    assert not db.exists()  # refused before the new store was created

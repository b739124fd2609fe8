"""Data is checked before a run exists: every file the run will read is opened (headers, sizes), the
bad ones listed, nothing stored and no model loaded (issue 11, item 4). ClickMe records, known only
by reading, stop a run that keeps its rows and resumes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignbench.datasets import open_dataset
from alignbench.datasets._file_checks import heatmap_shape, image_header, npy_header
from alignbench.testing.cli import invoke, no_runs, one_line_error

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "alignbench" / "data" / "sample"
SIZE = (48, 64)  # height, width of the folder images here


def _blob(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return np.exp(-((yy - height / 3) ** 2 + (xx - width / 2) ** 2) / (0.1 * height * width)).astype(np.float32)


def make_folder(root: Path, n: int = 3, size: tuple[int, int] = SIZE, *, suffix: str = ".png") -> Path:
    """``n`` real images (the sample's, resized) with smooth .npy heatmaps of their size."""
    (root / "images").mkdir(parents=True)
    (root / "heatmaps").mkdir()
    sources = sorted(SAMPLE_DIR.glob("*.JPEG"))
    for k in range(n):
        image = Image.open(sources[k % len(sources)]).convert("RGB").resize((size[1], size[0]))
        image.save(root / "images" / f"img{k:02d}{suffix}")
        np.save(root / "heatmaps" / f"img{k:02d}.npy", _blob(*size))
    return root


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _no_model(monkeypatch) -> None:
    import alignbench.scoring.compute

    monkeypatch.setattr(alignbench.scoring.compute, "compute_run", lambda *a, **k: pytest.fail("the scorer started"))


BAD_FILES = {
    "truncated PNG image": (lambda root: _truncate(root / "images" / "img01.png"), "images/img01.png: truncated or corrupt PNG"),
    "not an image": (lambda root: (root / "images" / "img01.png").write_bytes(b"\x00" * 300), "images/img01.png: not an image file"),
    "1x1 .npy heatmap": (
        lambda root: np.save(root / "heatmaps" / "img01.npy", np.ones((1, 1), np.float32)),
        "heatmaps/img01.npy: 1×1, but its image img01.png is 64×48",
    ),
    "heatmap of another size": (
        lambda root: np.save(root / "heatmaps" / "img01.npy", _blob(64, 48)),
        "heatmaps/img01.npy: 48×64, but its image img01.png is 64×48",
    ),
    "3-D heatmap": (lambda root: np.save(root / "heatmaps" / "img01.npy", np.ones((2, 48, 64), np.float32)), "shape (2, 48, 64)"),
    "truncated .npy": (lambda root: _truncate(root / "heatmaps" / "img01.npy"), "heatmaps/img01.npy: truncated"),
    "object .npy": (lambda root: np.save(root / "heatmaps" / "img01.npy", np.array([{}], dtype=object)), "holds Python objects"),
    "colour heatmap image": (
        lambda root: ((root / "heatmaps" / "img01.npy").unlink(), Image.new("RGB", (64, 48)).save(root / "heatmaps" / "img01.png")),
        "heatmaps/img01.png: is a RGB image",
    ),
    "grey heatmap image of another size": (
        lambda root: ((root / "heatmaps" / "img01.npy").unlink(), Image.new("L", (60, 48)).save(root / "heatmaps" / "img01.png")),
        "heatmaps/img01.png: 60×48, but its image",
    ),
}


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_a_bad_folder_file_is_named_before_anything_is_stored(tmp_path: Path, monkeypatch, bad: str) -> None:
    spoil, fragment = BAD_FILES[bad]
    root = make_folder(tmp_path / "f")
    spoil(root)
    _no_model(monkeypatch)
    db = tmp_path / "s.db"
    result = invoke("score", "--dataset", "folder", "--data-dir", root, "--db", f"sqlite:///{db}", "--workers", "0")
    one_line_error(result, "1 of the 3 images to score in dataset folder", fragment, "nothing was stored")
    assert not db.exists()


def test_a_truncated_jpeg_is_caught_by_its_missing_end_marker_and_a_trailer_is_not(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "f", n=2, suffix=".jpg")
    good = (root / "images" / "img00.jpg").read_bytes()
    (root / "images" / "img00.jpg").write_bytes(good + b"camera trailer after the end marker")
    assert image_header(root / "images" / "img00.jpg")[0] is None
    _truncate(root / "images" / "img01.jpg")
    problem = image_header(root / "images" / "img01.jpg")[0]
    assert problem is not None and problem.startswith("truncated or corrupt JPEG")
    dataset = open_dataset("folder", root)
    assert [p.split(":")[0] for p in dataset.file_problems(range(2))] == ["images/img01.jpg"]


def test_many_bad_files_list_the_first_ten_and_the_count(tmp_path: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "f", n=13)
    for k in range(1, 13):
        np.save(root / "heatmaps" / f"img{k:02d}.npy", np.ones((1, 1), np.float32))
    _no_model(monkeypatch)
    db = tmp_path / "s.db"
    line = one_line_error(
        invoke("score", "--dataset", "folder", "--data-dir", root, "--db", f"sqlite:///{db}", "--workers", "0"),
        "12 of the 13 images",
        "(and 2 more)",
    )
    assert line.count("heatmaps/img") == 10 and "img10.npy" in line and "img11.npy" not in line
    assert not db.exists()


def test_imagenet_val_truncated_jpeg_is_named_before_anything_is_stored(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "val"
    data.mkdir()
    names = sorted(p.name for p in SAMPLE_DIR.glob("*.JPEG"))[:3]
    for name in names:
        (data / name).write_bytes((SAMPLE_DIR / name).read_bytes())
    stems = [n.rsplit(".", 1)[0] for n in names]
    (data / "class_labels.txt").write_text("".join(f"val/{s}.JPEG,{k}\n" for k, s in enumerate(stems)))
    (data / "localization.txt").write_text("".join(f"val/{s}.JPEG,10,10,100,100\n" for s in stems))
    _truncate(data / names[2])
    _no_model(monkeypatch)
    db = tmp_path / "s.db"
    one_line_error(
        invoke("score", "--dataset", "imagenet-val", "--data-dir", data, "--db", f"sqlite:///{db}"),
        f"{names[2]}: truncated or corrupt JPEG",
        "1 of the 3 images",
    )
    assert not db.exists()


def test_only_the_files_the_run_reads_are_checked(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "f", n=3)
    np.save(root / "heatmaps" / "img02.npy", np.ones((1, 1), np.float32))  # beyond --limit 2
    db = tmp_path / "s.db"
    result = invoke(
        "score", "--dataset", "folder", "--data-dir", root, "--limit", "2", "--db", f"sqlite:///{db}", "--workers", "0", "--json"
    )
    assert result.exit_code == 0, result.output
    assert no_runs(db) is False


def test_header_readers_report_what_the_file_holds(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((1, 1), np.float32))
    assert npy_header(tmp_path / "a.npy") == (None, (1, 1), "float32")
    assert heatmap_shape((1, 1)) == (1, 1) and heatmap_shape((1, 5, 7)) == (5, 7) and heatmap_shape((5, 7, 1)) == (5, 7)
    assert heatmap_shape((2, 5, 7)) is None and heatmap_shape((5,)) is None
    (tmp_path / "b.npy").write_bytes(b"not numpy")
    assert npy_header(tmp_path / "b.npy")[0].startswith("not a .npy array file")


def test_a_bad_clickme_record_stops_the_run_with_its_rows_kept_and_it_resumes(tmp_path: Path) -> None:
    from alignbench.datasets import ClickMeRecord, write_clickme_shard

    shards = tmp_path / "shards"
    shards.mkdir()
    rng = np.random.default_rng(0)
    records = []
    for k, source in enumerate(sorted(SAMPLE_DIR.glob("*.JPEG"))[:5]):
        pixels = np.asarray(Image.open(source).convert("RGB").resize((256, 256)))
        heat = (255 * np.kron(rng.random((8, 8)), np.ones((32, 32)))).astype(np.uint8)
        records.append(ClickMeRecord(pixels, heat, k))
    records[3] = ClickMeRecord(records[3].image, b"\xff\xd8 not a JPEG after all", 3)  # CRCs fine, the JPEG is not
    write_clickme_shard(shards / "val-0.tfrecords", records)
    db = tmp_path / "s.db"
    args = ["score", "--dataset", "clickme-val", "--data-dir", shards, "--db", f"sqlite:///{db}", "--workers", "0", "--batch-size", "2"]
    one_line_error(invoke(*args), "val-0.tfrecords", "a JPEG does not decode")
    con = sqlite3.connect(db)
    runs = con.execute(
        "SELECT run.id, status, count(image_score.id) FROM run LEFT JOIN image_score ON run_id = run.id GROUP BY run.id"
    ).fetchall()
    assert runs == [(1, "partial", 2)]  # the first batch is kept
    one_line_error(invoke(*args), "val-0.tfrecords")  # the same run resumes, and stops at the same record
    assert con.execute("SELECT count(*), count(DISTINCT image_id) FROM image_score WHERE run_id = 1").fetchone() == (2, 2)
    assert con.execute("SELECT count(*) FROM run").fetchone() == (1,)

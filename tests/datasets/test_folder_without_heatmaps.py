"""The ``folder`` dataset without ``heatmaps/``: images (and labels.csv) only, no reference maps.

Metrics that never read a reference map (the faithfulness metrics) are scored on it exactly as on the
same images with heatmaps; a metric that reads one (spearman, the default) is refused before anything
is stored; a folder with heatmaps keeps the fingerprint it had before heatmaps became optional.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignbench.datasets import data_loader, open_dataset
from alignbench.metrics import METRICS
from alignbench.models import ModelRequest
from alignbench.scoring import ScoreRequest, score
from alignbench.testing.cli import invoke, one_line_error
from alignbench.testing.tolerance import EPS64, float32_relative

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "alignbench" / "data" / "sample"
TINY = ModelRequest("test_convnext", pretrained=False)
SIZE = (48, 64)  # height, width


def _folder(root: Path, n: int = 3, *, heatmaps: bool, seed: int = 0) -> Path:
    """``n`` real images (the sample's, resized) with labels.csv in the imagenet-samples-256 layout
    (filename,wnid,class_index,name); with ``heatmaps``, random .npy heatmaps of the images' size."""
    (root / "images").mkdir(parents=True)
    sources = sorted(SAMPLE_DIR.glob("*.JPEG"))
    rng = np.random.default_rng(seed)
    lines = ["filename,wnid,class_index,name"]
    for k in range(n):
        Image.open(sources[k]).convert("RGB").resize((SIZE[1], SIZE[0])).save(root / "images" / f"img{k:02d}.png")
        lines.append(f"img{k:02d}.png,n0000000{k},{3 * k + 1},class {k}")
        if heatmaps:
            (root / "heatmaps").mkdir(exist_ok=True)
            np.save(root / "heatmaps" / f"img{k:02d}.npy", rng.random(SIZE).astype(np.float32))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _rows(db: Path, run_id: int, columns: str) -> dict[str, tuple]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(f"SELECT image_id, {columns} FROM image_score WHERE run_id = ?", (run_id,)).fetchall()
    finally:
        con.close()
    return {row[0]: row[1:] for row in rows}


def test_spearman_cc_kl_and_sim_read_the_reference_map() -> None:
    # the explicit flag agrees with what the metric is undefined without (CC, KL and SIM read any
    # dataset's reference map as the density)
    assert [name for name, spec in METRICS.items() if spec.needs_reference] == ["spearman", "cc", "kl", "sim"]
    assert all(spec.needs_reference == ("reference" in spec.needs_variation) for spec in METRICS.values())


def test_a_folder_without_heatmaps_opens_without_reference_maps(tmp_path: Path) -> None:
    from alignbench.datasets._base import NO_REFERENCE
    from alignbench.models.preprocessing import Preprocessing

    root = _folder(tmp_path / "f", heatmaps=False)
    dataset = open_dataset("folder", root)
    assert dataset.has_reference is False and dataset.has_labels is True
    assert dataset.image_ids() == ["img00", "img01", "img02"] and dataset.labels() == [1, 4, 7]
    assert open_dataset("sample").has_reference is True

    pre = Preprocessing(input_size=(32, 40), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = next(iter(data_loader(dataset, pre, batch_size=3, num_workers=0)))
    assert batch["image"].shape == (3, 3, 32, 40)
    assert batch["reference"].shape == (3, 32, 40) and bool(batch["reference"].isnan().all())
    assert batch["reference_undefined"] == [NO_REFERENCE] * 3
    assert "reference_ranks" not in batch  # nothing to rank, nothing cached
    assert batch["label"].tolist() == [1, 4, 7]


def test_the_fingerprint_covers_images_and_labels(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", heatmaps=False)
    first = open_dataset("folder", root).fingerprint
    assert open_dataset("folder", root).fingerprint == first
    (root / "labels.csv").write_text("filename,label\nimg00.png,2\nimg01.png,4\nimg02.png,7\n")
    relabelled = open_dataset("folder", root).fingerprint
    assert relabelled != first
    Image.new("RGB", (SIZE[1], SIZE[0]), (9, 9, 9)).save(root / "images" / "img01.png")
    assert open_dataset("folder", root).fingerprint not in (first, relabelled)
    with_heatmaps = _folder(tmp_path / "g", heatmaps=True)
    (with_heatmaps / "labels.csv").write_bytes((root / "labels.csv").read_bytes())
    shutil.copy(root / "images" / "img01.png", with_heatmaps / "images" / "img01.png")
    assert open_dataset("folder", with_heatmaps).fingerprint != open_dataset("folder", root).fingerprint


def test_a_folder_with_heatmaps_keeps_its_fingerprint(tmp_path: Path) -> None:
    # Files written byte for byte the same on any machine (BMP, .npy, text); the value was computed by
    # alignbench before heatmaps/ became optional (commit fa80eed).
    root = tmp_path / "f"
    (root / "images").mkdir(parents=True)
    (root / "heatmaps").mkdir()
    for k in range(3):
        pixels = ((np.arange(12 * 16 * 3).reshape(12, 16, 3) * (k + 3)) % 256).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"img{k}.bmp")
        np.save(root / "heatmaps" / f"img{k}.npy", np.arange(12 * 16, dtype=np.float32).reshape(12, 16) * (k + 1))
    (root / "labels.csv").write_text("filename,label\nimg0.bmp,1\nimg1.bmp,2\nimg2.bmp,\n")
    dataset = open_dataset("folder", root)
    assert dataset.has_reference is True
    assert dataset.fingerprint == "64a317e00592a8625411b33b487c12e394a7ff19048c8d7e9e64d4f893b45289"


def test_an_image_without_its_heatmap_is_still_refused_when_heatmaps_exist(tmp_path: Path) -> None:
    from alignbench.errors import DatasetError

    root = _folder(tmp_path / "f", heatmaps=True)
    (root / "heatmaps" / "img01.npy").unlink()
    with pytest.raises(DatasetError, match="no heatmap in .* for 1 image"):
        open_dataset("folder", root)


def test_faithfulness_scores_do_not_depend_on_the_reference_maps(tmp_path: Path) -> None:
    without = _folder(tmp_path / "without", heatmaps=False)
    with_maps = _folder(tmp_path / "with", heatmaps=True)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    request = ScoreRequest(
        model=TINY,
        dataset="folder",
        metrics=("average-drop", "deletion"),
        metric_params={"deletion": {"steps": 4}},
        workers=0,
        batch_size=2,
    )
    plain = score(ScoreRequest(**{**request.__dict__, "data_dir": without}), db=url)
    mapped = score(ScoreRequest(**{**request.__dict__, "data_dir": with_maps}), db=url)
    assert plain.run_id != mapped.run_id  # two datasets, two fingerprints
    assert (plain.n_images, plain.n_scored, plain.n_skipped) == (3, 3, 0)
    assert plain.mean_spearman is None and plain.alignment_score is None
    a, b = (
        _rows(db, plain.run_id, "target, average_drop, deletion, spearman, skip_reason"),
        _rows(db, mapped.run_id, "target, average_drop, deletion, spearman, skip_reason"),
    )
    assert sorted(a) == ["img00", "img01", "img02"]
    for image_id, (target, drop, deletion, spearman, why) in a.items():
        assert target == [1, 4, 7][int(image_id[-1])]  # labels.csv's class_index column
        assert math.isfinite(drop) and math.isfinite(deletion) and spearman is None and why is None
        # the maps are no input of these: the same images in the same batches through the same float32
        # operations in the same order, in this process, so equal to the bit (was abs=1e-6, tuned; torch
        # aligns every buffer to 64 bytes, so an alignment-dependent BLAS path is the same too)
        assert (target, drop, deletion) == b[image_id][:3]
    # no centre-bias run: it would score the centre-bias map against reference maps there are none of
    con = sqlite3.connect(db)
    centre = con.execute(
        "SELECT dataset.fingerprint FROM run JOIN model ON model.id = run.model_id JOIN dataset ON dataset.id = run.dataset_id "
        "WHERE model.name = 'centre-bias'"
    ).fetchall()
    con.close()
    assert centre == [(open_dataset("folder", with_maps).fingerprint,)]
    again = score(ScoreRequest(**{**request.__dict__, "data_dir": without}), db=url)
    # the same stored values averaged again (≥ 0 each, three of them): float64 rounding of a same-sign mean
    assert again.cached is True and again.metrics == pytest.approx(plain.metrics, rel=float32_relative(3 + 1, eps=EPS64))
    # compare shows "—" for the centre bias and does not ask for a reference run that cannot exist
    compared = invoke("compare", "--metric", "average-drop", "--db", url)
    assert compared.exit_code == 0, compared.output
    assert "centre bias" in compared.output and "no centre-bias reference stored" not in compared.output


@pytest.mark.parametrize("metric", [None, "spearman", "average-drop,spearman"])
def test_spearman_is_refused_before_anything_is_stored(tmp_path: Path, monkeypatch, metric: str | None) -> None:
    import alignbench.scoring.compute

    monkeypatch.setattr(alignbench.scoring.compute, "compute_run", lambda *a, **k: pytest.fail("the scorer started"))
    root = _folder(tmp_path / "f", heatmaps=False)
    db = tmp_path / "s.db"
    options = [] if metric is None else ["--metric", metric]  # spearman is the default
    line = one_line_error(
        invoke("score", "--dataset", "folder", "--data-dir", root, *options, "--db", f"sqlite:///{db}", "--workers", "0"),
        "metric 'spearman' needs reference maps",
        str(root),
        "add heatmaps/ with one map per image",
        "deletion, insertion, average-drop, average-increase, average-gain",
    )
    assert "pointing-game" not in line  # a box metric is no way out on a dataset without boxes
    assert not db.exists()


def test_a_truncated_image_is_named_without_heatmaps(tmp_path: Path, monkeypatch) -> None:
    import alignbench.scoring.compute

    monkeypatch.setattr(alignbench.scoring.compute, "compute_run", lambda *a, **k: pytest.fail("the scorer started"))
    root = _folder(tmp_path / "f", heatmaps=False)
    data = (root / "images" / "img01.png").read_bytes()
    (root / "images" / "img01.png").write_bytes(data[: len(data) * 2 // 3])
    assert [p.split(":")[0] for p in open_dataset("folder", root).file_problems(range(3))] == ["images/img01.png"]
    db = tmp_path / "s.db"
    one_line_error(
        invoke("score", "--dataset", "folder", "--data-dir", root, "--metric", "average-drop", "--db", f"sqlite:///{db}", "--workers", "0"),
        "1 of the 3 images to score in dataset folder",
        "images/img01.png: truncated or corrupt PNG",
        "nothing was stored",
    )
    assert not db.exists()


def test_the_html_gallery_shows_no_reference_map_and_no_centre_bias(tmp_path: Path) -> None:
    from alignbench.html_report import write_html_report

    root = _folder(tmp_path / "f", heatmaps=False)
    url = f"sqlite:///{tmp_path / 's.db'}"
    run = score(ScoreRequest(model=TINY, dataset="folder", data_dir=root, metrics=("average-drop",), workers=0), db=url)
    result = write_html_report(tmp_path / "report", url, metric="average-drop", gallery=1)
    assert result.unavailable == {} and result.thumbnails_computed == 3
    con = sqlite3.connect(tmp_path / "s.db")
    kinds = con.execute("SELECT image_id, kind FROM thumbnail WHERE run_id = ?", (run.run_id,)).fetchall()
    con.close()
    assert sorted(kinds) == sorted((f"img{k:02d}", kind) for k in range(3) for kind in ("image", "model"))
    page = result.index.read_text()
    assert "reference map not available: the dataset has no reference maps" in page
    assert "centre-bias map not available: the dataset has no reference maps" in page
    # the next report finds every thumbnail it needs: nothing computed again
    assert write_html_report(tmp_path / "report", url, metric="average-drop", gallery=1).thumbnails_computed == 0

"""`alignbench report --html` end to end: real runs of a tiny timm model (baseline and DCLS) on the
embedded sample, gallery maps computed as `score` computes them, and the page opened from disk in
headless Chromium (Debian's `chromium`, installed by scripts/system_packages.sh)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.html_report import write_html_report
from alignbench.models import ModelRequest
from alignbench.scoring import ScoreRequest, score
from alignbench.testing.browser import Browser

TINY = ModelRequest("test_convnext", pretrained=False)
TINY_DCLS = ModelRequest(
    "test_convnext", dcls=True, pretrained=False, version="v1", dilated_kernel_size=9, kernel_count=20, init="from-dense"
)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Baseline and DCLS runs of test_convnext on the 10 sample images (threshold-gradcam), the
    centre-bias run, and a gradcam run of a checkpoint deleted since; the HTML report written once."""
    root = tmp_path_factory.mktemp("html")
    url = f"sqlite:///{root / 's.db'}"
    baseline = score(ScoreRequest(model=TINY, workers=0), db=url)
    dcls = score(ScoreRequest(model=TINY_DCLS, workers=0), db=url)
    from safetensors.torch import save_file

    from alignbench.models import load_model

    checkpoint = root / "gone.safetensors"
    state = {k: v.contiguous() for k, v in load_model(TINY).state_dict().items()}
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, str(checkpoint))
    gone = score(ScoreRequest(model=ModelRequest("test_convnext", checkpoint=checkpoint), explainer="gradcam", workers=0), db=url)
    checkpoint.unlink()
    out = root / "report"
    result = write_html_report(out, url)
    return {
        "url": url,
        "db": root / "s.db",
        "out": out,
        "result": result,
        "baseline": baseline.run_id,
        "dcls": dcls.run_id,
        "gone": gone.run_id,
    }


def _thumbnails(db: Path, run_id: int) -> dict[tuple[str, str], tuple[bytes, float | None, float | None]]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT image_id, kind, png, vmin, vmax FROM thumbnail WHERE run_id = ?", (run_id,)).fetchall()
    return {(image_id, kind): (png, vmin, vmax) for image_id, kind, png, vmin, vmax in rows}


def test_gallery_maps_are_the_runs_maps(tiny_store: dict) -> None:
    """The stored thumbnails are the maps `score` made: recomputed here with the public API on the same
    images and targets, they reproduce the stored Spearman and the stored thumbnails."""
    from alignbench import explain, load_model, spearman
    from alignbench.datasets import data_loader, open_dataset
    from alignbench.html_report.thumbnails import image_thumbnails, map_thumbnails

    result = tiny_store["result"]
    assert result.thumbnails_computed == 20  # 10 images × the two runs of the comparison
    assert set(result.unavailable) == {tiny_store["gone"]} and "does not exist" in result.unavailable[tiny_store["gone"]]
    for request, run_id in ((TINY, tiny_store["baseline"]), (TINY_DCLS, tiny_store["dcls"])):
        # as score and the report run it (compute._load, thumbnails): NHWC kernels, eval, no parameter
        # gradients, the 10 images in one batch (their default 16). The same float32 operations on the same
        # data in the same order, in this same process: equal to the bit (was abs=1e-5, tuned; a worst-case
        # rounding bound would check nothing: the maps' propagated bound is ~1.5% of their range here, too
        # coarse for a rank statistic of near-tied values, see tests/scoring/test_distributed.py's _assert_same_rows)
        model = load_model(request).to(memory_format=torch.channels_last).eval().requires_grad_(False)
        pre = model.alignbench_info.preprocessing
        batch = next(iter(data_loader(open_dataset("sample"), pre, "aligned", batch_size=10, num_workers=0, reference_ranks=False)))
        images = batch["image"].to(memory_format=torch.channels_last)
        maps = explain(model, images, batch["label"], method="threshold-gradcam")
        with sqlite3.connect(tiny_store["db"]) as con:
            stored = dict(con.execute("SELECT image_id, spearman FROM image_score WHERE run_id = ?", (run_id,)).fetchall())
        rho = spearman(maps, batch["reference"]).tolist()
        assert rho == [stored[i] for i in batch["image_id"]]
        thumbnails = _thumbnails(tiny_store["db"], run_id)
        assert len(thumbnails) == 30
        expected_maps = map_thumbnails(maps)
        expected_images = image_thumbnails(batch["image"], pre.mean, pre.std)
        for k, image_id in enumerate(batch["image_id"]):
            png, vmin, vmax = thumbnails[(image_id, "model")]
            assert (vmin, vmax) == expected_maps[k][1:]  # the same maps' minimum and maximum (was abs=1e-5)
            assert np.abs(_decode(png).astype(int) - _decode(expected_maps[k][0]).astype(int)).max() <= 1
            assert np.abs(_decode(thumbnails[(image_id, "image")][0]).astype(int) - _decode(expected_images[k]).astype(int)).max() <= 1
            assert _decode(png).shape == (112, 112) and tuple(pre.input_size) == (160, 160)  # 160×160 input, 112 a side


def _rgb(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)


def _decode(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def test_second_report_reuses_the_maps_without_torch(tiny_store: dict, tmp_path: Path) -> None:
    # the run whose checkpoint is gone still lacks its maps (the report tries again, with torch): not selected here
    code = (
        "import sys; from alignbench.html_report import write_html_report; "
        f"r = write_html_report({str(tmp_path / 'again')!r}, {tiny_store['url']!r}, explainer='threshold-gradcam'); "
        "print(r.thumbnails_computed, r.n_galleries, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "1", "False"]


def test_a_run_whose_model_cannot_be_loaded_is_named_in_its_gallery(tiny_store: dict, tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["report", "--db", tiny_store["url"], "--html", str(out), "--explainer", "gradcam"])
    assert result.exit_code == 0, result.output
    assert f"run {tiny_store['gone']}: maps not shown" in result.stderr and "does not exist" in result.stderr
    html = (out / "index.html").read_text()
    assert "Maps not shown" in html and "gone.safetensors does not exist" in html


def test_report_in_a_real_browser(tiny_store: dict, tmp_path: Path) -> None:
    out = tiny_store["out"]
    with sqlite3.connect(tiny_store["db"]) as con:
        stored_runs = [str(r) for (r,) in con.execute("SELECT id FROM run ORDER BY id")]
    with Browser() as browser:
        browser.open((out / "index.html").as_uri())
        assert browser.console_errors() == []
        assert all(url.startswith(("file:", "data:")) for url in browser.requested_urls())  # nothing from the network
        images = browser.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        assert images and [src for src, loaded in images if not loaded] == []
        first_column = "Array.from(document.querySelectorAll('#runs tbody tr')).map(r => r.cells[0].textContent.trim())"
        assert browser.evaluate(first_column) == stored_runs  # every stored run, in id order
        browser.evaluate("document.querySelectorAll('#runs thead th')[0].click()")  # ascending: no change
        browser.evaluate("document.querySelectorAll('#runs thead th')[0].click()")  # descending
        assert browser.evaluate(first_column) == stored_runs[::-1]
        assert browser.evaluate("document.querySelectorAll('#runs thead th')[0].getAttribute('aria-sort')") == "descending"
        by_model = "document.querySelectorAll('#runs thead th')[1].click()"
        browser.evaluate(by_model)
        models = browser.evaluate("Array.from(document.querySelectorAll('#runs tbody tr')).map(r => r.cells[1].textContent.trim())")
        assert models == sorted(models, key=str.lower)
        rows = browser.evaluate(
            "Array.from(document.querySelectorAll('#galleries .gallery-row')).map(row => ({"
            " id: row.dataset.image,"
            " picture: row.querySelector('img.picture')?.naturalWidth || 0,"
            " human: row.querySelector('img.plain.human')?.naturalWidth || 0,"
            " model: Array.from(row.querySelectorAll('img.plain.model')).map(i => i.naturalWidth),"
            " unavailable: row.querySelectorAll('.unavailable').length}))"
        )
        comparison = [r for r in rows if len(r["model"]) == 2]
        assert len(comparison) == 10  # the comparison's gallery: every sample image once
        assert all(r["picture"] > 0 and r["human"] > 0 and min(r["model"]) > 0 and r["unavailable"] == 0 for r in comparison)
        # from-dense DCLS: per-image differences of float rounding (~3e-6 of ρ), identical relative to ρ's range
        assert browser.evaluate("document.getElementById('comparisons').textContent.includes('identical')")
        # an overlay is the map drawn over the picture at explain's weight: the pixels the browser drew
        overlay = "#galleries .gallery-row .overlay"
        under, over = browser.evaluate(f"Array.from(document.querySelector('{overlay}').children).map(i => i.getAttribute('src'))")
        drawn = _rgb(browser.capture(overlay))
        under, over = _rgb((out / under).read_bytes()), _rgb((out / over).read_bytes())
        error = np.abs(drawn - (0.5 * under + 0.5 * over))
        assert error.mean() < 1.0 and np.percentile(error, 99) <= 2.0
        shot = browser.screenshot(tmp_path / "index.png")
        assert shot.stat().st_size > 50_000

    run_page = tmp_path / "run"
    write_html_report(run_page, tiny_store["url"], run_id=tiny_store["dcls"], gallery=3)
    with Browser() as browser:
        browser.open((run_page / "index.html").as_uri())
        assert browser.console_errors() == []
        assert browser.evaluate("Array.from(document.images).every(i => i.naturalWidth > 0)")
        table_ids = "Array.from(document.querySelectorAll('#image-table tbody tr')).map(r => r.cells[1].textContent)"
        ids = browser.evaluate(table_ids)
        assert len(ids) == 10 and browser.evaluate("document.getElementById('image-page-info').textContent") == "1–10 of 10"
        browser.evaluate(
            "{ const box = document.getElementById('image-filter'); box.value = '00009492'; box.dispatchEvent(new Event('input')); }"
        )
        assert browser.evaluate(table_ids) == ["ILSVRC2012_val_00009492"]
        browser.evaluate("{ const box = document.getElementById('image-filter'); box.value = ''; box.dispatchEvent(new Event('input')); }")
        browser.evaluate("document.querySelectorAll('#image-table thead th')[5].click()")  # by the metric, ascending
        values = browser.evaluate("Array.from(document.querySelectorAll('#image-table tbody tr')).map(r => Number(r.cells[5].textContent))")
        assert values == sorted(values) and len(values) == 10
        assert browser.evaluate("document.querySelectorAll('#galleries .gallery-row').length") == 9  # 3 best, 3 worst, 3 random
        browser.screenshot(tmp_path / "run.png")

"""`alignbench explain` and ``explain_files`` on real images with real weights (efficientnet_lite0)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.explainers import explain_files
from alignbench.explainers._files import CAPTION_HEIGHT
from alignbench.testing.tolerance import float32_bound

SNAKE = "ILSVRC2012_val_00009492.JPEG"  # class 57, garter snake
CABINET = "ILSVRC2012_val_00007272.JPEG"  # class 495, china cabinet


@pytest.fixture(scope="module")
def lite0():
    from alignbench.models import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture()
def folder(shared_data, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in (SNAKE, CABINET):
        shutil.copy(shared_data / "imagenet-val-10" / name, images / name)
    (images / "notes.txt").write_text("not an image")  # ignored: a directory means its image files
    (images / "broken.jpg").write_text("not a jpeg either")  # named and skipped
    return images


def test_explain_writes_maps_and_overlays_and_names_the_class(folder, tmp_path):
    out = tmp_path / "maps"
    result = CliRunner().invoke(app, ["explain", "efficientnet_lite0", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "garter snake" in result.stdout and "china cabinet" in result.stdout
    assert "skipped" in result.stderr and "broken.jpg" in result.stderr and "notes.txt" not in result.stderr
    for stem in (SNAKE[:-5], CABINET[:-5]):
        heatmap = np.load(out / f"{stem}.npy")
        assert heatmap.shape == (224, 224) and heatmap.dtype == np.float32
        # threshold-gradcam's floor: float32(0.3) bilinearly interpolated (4 products summed) and compared in float64
        assert abs(heatmap.min() - 0.3) <= float32_bound(4 + 1, 0.3) and heatmap.max() <= 1.0
        with Image.open(out / f"{stem}.png") as png:
            assert png.size == (224, 224 + CAPTION_HEIGHT)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s[:-5]}.{ext}" for s in (SNAKE, CABINET) for ext in ("npy", "png"))


def test_explain_with_a_target_and_another_explainer(folder, tmp_path):
    out = tmp_path / "maps"
    args = ["explain", "efficientnet_lite0", str(folder / SNAKE), "--out", str(out), "--explainer", "gradcam", "--target", "495"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "495 china cabinet" in result.stdout  # the target column names a class that is not the prediction
    assert np.load(out / f"{SNAKE[:-5]}.npy").min() >= 0


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--target", "1000"], 2, "target class 1000 is out of range for a model with 1000 classes"),
        (["--explainer", "rollout"], 2, "rollout needs a ViT/DeiT-style model"),
        (["--explainer", "nope"], 2, "unknown explainer 'nope'"),
        (["--explainer", "gradcam", "--threshold", "0.5"], 2, "takes no parameter 'threshold'"),
    ],
)
def test_bad_options_are_one_line_errors(folder, tmp_path, extra, code, message):
    result = CliRunner().invoke(app, ["explain", "efficientnet_lite0", str(folder / SNAKE), "--out", str(tmp_path), *extra])
    assert result.exit_code == code
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_no_readable_image_exits_2_naming_the_files(folder, tmp_path):
    args = ["explain", "efficientnet_lite0", str(folder / "broken.jpg"), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "broken.jpg" in result.stderr and "missing.png" in result.stderr
    assert not (tmp_path / "o").exists()


def _box_hits(shared_data, explained, crop=224, resize=256):
    """How many maps peak inside a human-drawn box, mapping the peak back through resize + centre crop."""
    rows = {r["filename"]: r for r in csv.DictReader(open(shared_data / "imagenet-val-10" / "labels_bboxes.csv"))}
    hits = 0
    for item in explained.files:
        row = rows[item.source.name]
        width, height = int(row["width"]), int(row["height"])
        scale = resize / min(width, height)
        y, x = np.unravel_index(np.argmax(np.load(item.npy)), (crop, crop))
        ox, oy = (round(width * scale) - crop) / 2, (round(height * scale) - crop) / 2
        px, py = (x + 0.5 + ox) / scale, (y + 0.5 + oy) / scale
        boxes = [tuple(map(float, b.split())) for b in row["boxes_x0y0x1y1"].split(";")]
        hits += any(x0 <= px <= x1 and y0 <= py <= y1 for x0, y0, x1, y1 in boxes)
    return hits


def test_real_images_are_classified_and_explained_inside_the_object(shared_data, lite0, tmp_path):
    """ImageNet-val images with real weights: 9 of 10 classified correctly, and the Threshold-Grad-CAM
    peak lies inside a human-drawn box for at least 8 of them."""
    labels = {r["filename"]: int(r["class_index"]) for r in csv.DictReader(open(shared_data / "imagenet-val-10" / "labels_bboxes.csv"))}
    explained = explain_files(lite0, [shared_data / "imagenet-val-10"], tmp_path, batch_size=10)
    assert len(explained.files) == 10 and not explained.skipped
    assert sum(item.prediction == labels[item.source.name] for item in explained.files) >= 9
    assert _box_hits(shared_data, explained) >= 8
    assert all(0 < item.confidence <= 1 for item in explained.files)
    assert lite0.training is False and all(p.grad is None for p in lite0.parameters())
    assert torch.get_default_dtype() == torch.float32

"""A constant map — in its file, or up to rounding after preprocessing — gets no score: NULL with the
reason, counted as skipped, on either side, through every dataset loader (issue 11, item 1)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from alignbench.datasets import ClickMeRecord, open_dataset, torch_dataset, write_clickme_shard
from alignbench.metrics import METRICS
from alignbench.metrics.constancy import CONSTANT_RTOL, constant_map_reason, mask_undefined, relative_range
from alignbench.models.preprocessing import Preprocessing
from alignbench.testing.cli import invoke

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "alignbench" / "data" / "sample"
PREP = Preprocessing((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
VALUES = (0.0, 1e-6, 0.5, 1.0, 255.0, 1e6, -3.0)
SIZES = ((16, 16), (48, 64), (250, 300), (1000, 700), (3000, 4000))


# --- the rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("size", SIZES)
def test_a_resized_constant_is_constant_up_to_rounding(value: float, size: tuple[int, int]) -> None:
    constant = torch.full((1, 1, *size), value, dtype=torch.float32)
    for antialias in (True, False):  # the folder resize, the ClickMe resize
        resized = F.interpolate(constant, size=(224, 224), mode="bilinear", align_corners=False, antialias=antialias)[0]
        assert float(relative_range(resized)) <= CONSTANT_RTOL
        assert constant_map_reason(resized, "the map")[0] is not None


def test_maps_that_vary_are_defined_however_small_or_offset() -> None:
    blob = torch.exp(-(torch.linspace(-3, 3, 224)[None, :] ** 2) - torch.linspace(-3, 3, 224)[:, None] ** 2)
    for scale, offset in ((1.0, 0.0), (1e-30, 0.0), (1e-8, 0.0), (1e-3, 1.0), (1.0, -5.0)):
        assert constant_map_reason((offset + scale * blob)[None], "the map") == [None]
    nudged = torch.full((1, 224, 224), 0.5, dtype=torch.float64)
    nudged[0, 10, 10] = 0.5 * (1 + 10 * CONSTANT_RTOL)
    assert constant_map_reason(nudged, "the map") == [None]
    nudged[0, 10, 10] = 0.5 * (1 + CONSTANT_RTOL / 2)
    assert "constant up to rounding" in constant_map_reason(nudged, "the map")[0]


def test_reasons_name_the_map_and_non_finite_maps() -> None:
    maps = torch.stack([torch.zeros(8, 8), torch.full((8, 8), float("nan")), torch.rand(8, 8)])
    reasons = constant_map_reason(maps, "the model's map")
    assert reasons == ["the model's map is constant", "the model's map holds NaN or ±inf values", None]


def test_every_metric_needs_the_model_map_to_vary_and_those_reading_the_reference_it_too() -> None:
    assert METRICS["spearman"].needs_variation == ("model", "reference")
    assert all("model" in spec.needs_variation for spec in METRICS.values())
    assert {name for name, spec in METRICS.items() if "reference" in spec.needs_variation} == {"spearman", "cc", "kl", "sim"}
    assert all(("reference" in spec.needs_variation) == spec.needs_reference for spec in METRICS.values())


def test_metrics_are_masked_per_image_on_the_side_they_need() -> None:
    values = {"spearman": torch.tensor([0.4, 0.5, 0.6], dtype=torch.float64), "pointing-game": torch.tensor([1.0, 0.0, 1.0])}
    reasons = mask_undefined(values, {"model": [None, None, "model flat"], "reference": [None, "reference flat", None]})
    assert values["spearman"][0] == 0.4 and values["spearman"][1:].isnan().all()
    assert values["pointing-game"].tolist()[:2] == [1.0, 0.0] and values["pointing-game"][2].isnan()
    assert reasons == {"spearman": [None, "reference flat", "model flat"], "pointing-game": [None, None, "model flat"]}


def test_the_scorer_masks_a_model_map_constant_up_to_rounding() -> None:
    from alignbench.scoring.compute import _metric_values

    maps = torch.full((2, 224, 224), 0.3)
    maps[0, 100, 100] = torch.nextafter(torch.tensor(0.3), torch.tensor(1.0))  # one ulp: ranks would be noise
    maps[1] = torch.rand(224, 224, generator=torch.Generator().manual_seed(0))
    reference = torch.rand(2, 224, 224, generator=torch.Generator().manual_seed(1))
    batch = {
        "reference": reference,
        "reference_undefined": [None, None],
        "index": torch.tensor([0, 1]),
        "boxes": torch.tensor([[[10.0, 10.0, 120.0, 120.0]]] * 2),
        "box_counts": torch.tensor([1, 1]),
    }
    metrics = ("energy-in-box", "pointing-game", "spearman", "stochastic-pointing-game")
    values, reasons = _metric_values(metrics, maps, batch, model=None, explanation=None, params={})
    for metric in metrics:
        assert values[metric][0].isnan() and not values[metric][1].isnan(), metric
        assert "the model's map is constant up to rounding" in reasons[metric][0] and reasons[metric][1] is None


# --- every loader: the reference as given -----------------------------------------------------------


def _items(dataset, n: int | None = None) -> list[dict]:
    items = torch_dataset(dataset, PREP, reference_ranks=False)
    return [items[k] for k in range(n or len(items))]


def _folder(root: Path, maps: dict[str, tuple[np.ndarray, str]]) -> Path:
    """images/<stem>.png (a real image resized to the map's size) and heatmaps/<stem>.<ext>."""
    (root / "images").mkdir(parents=True)
    (root / "heatmaps").mkdir()
    sources = sorted(SAMPLE_DIR.glob("*.JPEG"))
    for k, (stem, (heatmap, ext)) in enumerate(maps.items()):
        height, width = heatmap.shape
        Image.open(sources[k % len(sources)]).convert("RGB").resize((width, height)).save(root / "images" / f"{stem}.png")
        if ext == "npy":
            np.save(root / "heatmaps" / f"{stem}.npy", heatmap)
        else:
            Image.fromarray(heatmap.astype(np.uint8)).save(root / "heatmaps" / f"{stem}.{ext}")
    return root


def _blob(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return np.exp(-((yy - height / 2) ** 2 + (xx - width / 3) ** 2) / (0.05 * height * width)).astype(np.float32)


def test_folder_heatmaps_constant_in_their_file_of_several_values_and_sizes(tmp_path: Path) -> None:
    maps = {}
    for value in (0.0, 0.5, 255.0, 1e6):
        for height, width in ((48, 64), (250, 300), (17, 23)):
            maps[f"npy-{value:g}-{height}x{width}"] = (np.full((height, width), value, np.float32), "npy")
    maps["png-128"] = (np.full((40, 50), 128), "png")
    maps["png-0"] = (np.zeros((40, 50)), "png")
    noisy = np.full((48, 64), 0.5, np.float32)
    noisy[::7, ::5] = np.nextafter(np.float32(0.5), np.float32(1))  # constant up to rounding in the file itself
    maps["npy-noisy"] = (noisy, "npy")
    maps["varies"] = (_blob(48, 64), "npy")
    maps["varies-png"] = (255 * _blob(40, 50), "png")
    dataset = open_dataset("folder", _folder(tmp_path / "f", maps))
    for stem, item in zip(dataset.image_ids(), _items(dataset)):
        if stem.startswith("varies"):
            assert item["reference_undefined"] is None, stem
        else:
            assert item["reference_undefined"] == "the reference map is constant in its heatmap file", stem


def _clickme_shard(directory: Path, heatmaps: list[np.ndarray]) -> Path:
    directory.mkdir()
    sources = sorted(SAMPLE_DIR.glob("*.JPEG"))
    records = [
        ClickMeRecord(np.asarray(Image.open(sources[k]).convert("RGB").resize((256, 256))), heatmap.astype(np.uint8), k)
        for k, heatmap in enumerate(heatmaps)
    ]
    write_clickme_shard(directory / "val-0.tfrecords", records)
    return directory


def test_clickme_records_with_a_constant_heatmap_even_though_the_blur_makes_it_vary(tmp_path: Path) -> None:
    heatmaps = [np.full((256, 256), value) for value in (0, 1, 128, 255)] + [255 * _blob(256, 256)]
    dataset = open_dataset("clickme-val", _clickme_shard(tmp_path / "shards", heatmaps), download=False)
    items = _items(dataset)
    for item in items[:4]:
        assert item["reference_undefined"] == "the reference map is constant in its ClickMe record"
    assert items[4]["reference_undefined"] is None
    # the ClickMe blur's zero padding darkens the border of a constant map: after preprocessing it varies
    assert float(relative_range(items[3]["reference"][None])) > 0.1


def _imagenet_val(root: Path, boxes: list[str]) -> Path:
    root.mkdir()
    names = sorted(p.name for p in SAMPLE_DIR.glob("*.JPEG"))[: len(boxes)]
    labels, localisation, sizes = [], [], []
    for k, (name, box) in enumerate(zip(names, boxes)):
        (root / name).write_bytes((SAMPLE_DIR / name).read_bytes())
        width, height = Image.open(root / name).size
        box = box.format(w=width - 1, h=height - 1, W=width + 50, H=height + 50)
        labels.append(f"val/{name},{k}\n")
        localisation.append(f"val/{name},{box}\n")
        sizes.append(f"val/{name},{width},{height}\n")
    (root / "class_labels.txt").write_text("".join(labels))
    (root / "localization.txt").write_text("".join(localisation))
    (root / "image_sizes.txt").write_text("".join(sizes))
    return root


def test_imagenet_val_box_masks_that_are_constant_are_undefined(tmp_path: Path) -> None:
    # a box covering the whole image (mask all ones), a box outside it (mask all zeros), a real box
    root = _imagenet_val(tmp_path / "val", ["0,0,{w},{h}", "{W},{H},{W},{H}", "20,20,120,110"])
    items = _items(open_dataset("imagenet-val", root))
    origin = "the reference map is constant in its box mask (no box inside the image, or boxes covering all of it)"
    assert [item["reference_undefined"] for item in items] == [origin, origin, None]


def test_the_embedded_sample_has_no_constant_reference_and_its_loader_flags_one(monkeypatch) -> None:
    from alignbench.datasets import _imagenet

    assert all(item["reference_undefined"] is None for item in _items(open_dataset("sample")))
    table = _imagenet._read_sample_csv()
    first = sorted(table)[0]
    label, (width, height), _ = table[first]
    table[first] = (label, (width, height), [(0.0, 0.0, width - 1.0, height - 1.0)])  # one box over the whole image
    monkeypatch.setattr(_imagenet, "_read_sample_csv", lambda: table)
    (item,) = _items(open_dataset("sample"), 1)
    assert item["reference_undefined"].startswith("the reference map is constant in its box mask")


# --- through the CLI: NULL with the reason, counted as skipped --------------------------------------


def _rows(db: Path, run_id: int) -> list[tuple[str, float | None, str | None]]:
    con = sqlite3.connect(db)
    return con.execute(
        "SELECT image_id, spearman, skip_reason FROM image_score WHERE run_id = ? ORDER BY image_index", (run_id,)
    ).fetchall()


def _centre_bias_rows(db: Path) -> list[tuple[str, float | None, str | None]]:
    con = sqlite3.connect(db)
    return con.execute(
        "SELECT image_id, spearman, skip_reason FROM image_score JOIN run ON run.id = run_id JOIN model ON model.id = run.model_id "
        "WHERE model.name = 'centre-bias' ORDER BY image_index"
    ).fetchall()


def test_score_stores_null_with_the_reason_for_constant_folder_heatmaps(tmp_path: Path) -> None:
    maps = {
        "a-constant-0.5": (np.full((48, 64), 0.5, np.float32), "npy"),
        "b-constant-0": (np.zeros((250, 300), np.float32), "npy"),
        "c-constant-200": (np.full((30, 90), 200), "png"),
        "d-varies": (_blob(48, 64), "npy"),
    }
    root = _folder(tmp_path / "f", maps)
    db = tmp_path / "s.db"
    result = invoke("score", "--dataset", "folder", "--data-dir", root, "--db", f"sqlite:///{db}", "--workers", "0", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["n_images"], summary["n_scored"], summary["n_skipped"]) == (4, 1, 3)
    rows = _rows(db, summary["run_id"])
    assert summary["mean_spearman"] == rows[3][1]  # the mean of one stored value is that value
    for image_id, value, reason in rows[:3]:
        assert value is None and reason == "spearman: the reference map is constant in its heatmap file", image_id
    assert rows[3][1] is not None and rows[3][2] is None
    reference = _centre_bias_rows(db)
    assert [value is None for _, value, _ in reference] == [True, True, True, False]
    assert reference[0][2] == "spearman: the reference map is constant in its heatmap file"


def test_score_stores_null_for_a_constant_clickme_heatmap(tmp_path: Path) -> None:
    shards = _clickme_shard(tmp_path / "shards", [np.full((256, 256), 77), 255 * _blob(256, 256)])
    db = tmp_path / "s.db"
    result = invoke("score", "--dataset", "clickme-val", "--data-dir", shards, "--db", f"sqlite:///{db}", "--workers", "0", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["n_scored"], summary["n_skipped"]) == (1, 1)
    (first, second) = _rows(db, summary["run_id"])
    assert first[1:] == (None, "spearman: the reference map is constant in its ClickMe record") and second[1] is not None


def test_score_stores_null_for_a_constant_box_mask_and_keeps_the_box_metrics(tmp_path: Path) -> None:
    root = _imagenet_val(tmp_path / "val", ["0,0,{w},{h}", "20,20,120,110"])
    db = tmp_path / "s.db"
    result = invoke(
        "score",
        "--dataset",
        "imagenet-val",
        "--data-dir",
        root,
        "--metric",
        "spearman,pointing-game",
        "--db",
        f"sqlite:///{db}",
        "--workers",
        "0",
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT spearman, pointing_game, skip_reason FROM image_score WHERE run_id = ? ORDER BY image_index", (summary["run_id"],)
    ).fetchall()
    assert rows[0][0] is None and rows[0][1] is not None  # the box still tells where the object is
    assert rows[0][2].startswith("spearman: the reference map is constant in its box mask")
    assert rows[1][0] is not None and rows[1][2] is None


def test_score_stores_null_for_a_constant_model_map_on_every_metric(tmp_path: Path) -> None:
    from alignbench.models import load_model

    state = load_model("test_efficientnet", pretrained=False).state_dict()
    for value in state.values():
        if value.dim() == 4:
            value.zero_()  # every conv outputs zeros: the features, and so every map, are flat
    checkpoint = tmp_path / "flat.pth"
    torch.save(state, checkpoint)
    db = tmp_path / "s.db"
    result = invoke(
        "score",
        "test_efficientnet",
        "--checkpoint",
        checkpoint,
        "--limit",
        "2",
        "--explainer",
        "gradcam",
        "--metric",
        "spearman,energy-in-box",
        "--db",
        f"sqlite:///{db}",
        "--workers",
        "0",
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_skipped"] == 2 and summary["metrics"] == {"spearman": None, "energy-in-box": None}
    reasons = [row[2] for row in _rows(db, summary["run_id"])]
    assert reasons == ["energy-in-box: the model's map is constant; spearman: the model's map is constant"] * 2

"""The registry, `sample`, `imagenet-val` and `folder` on real images, and their bad inputs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignbench.datasets import DATASETS, PROTOCOLS, data_loader, open_dataset, torch_dataset
from alignbench.datasets._imagenet import box_mask
from alignbench.errors import DatasetError
from alignbench.metrics.spearman import spearman
from alignbench.models.preprocessing import Preprocessing
from alignbench.testing.tolerance import float32_bound, float32_relative

PREP = Preprocessing((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _sample_table(shared_data: Path) -> dict[str, dict]:
    with open(shared_data / "imagenet-val-10" / "labels_bboxes.csv", newline="") as handle:
        return {row["filename"]: row for row in csv.DictReader(handle)}


@pytest.mark.parametrize("name", list(DATASETS))
def test_registry_entries_are_complete(name):
    spec = DATASETS[name]
    assert spec.name == name and spec.description and spec.reference
    assert set(spec.protocols) <= set(PROTOCOLS) and "aligned" in spec.protocols
    assert (spec.ceiling == 0.65753) == (name == "clickme-val")


def test_open_and_list_ids_without_torch():
    code = (
        "import sys; from alignbench.datasets import open_dataset; d = open_dataset('sample'); "
        "assert len(d.image_ids()) == 10 and len(d.fingerprint) == 64; "
        "assert 'torch' not in sys.modules, 'opening a dataset imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_dataset_and_missing_data_dir():
    with pytest.raises(DatasetError, match=r"unknown dataset 'nope'; available: sample, clickme-val"):
        open_dataset("nope")
    with pytest.raises(DatasetError, match=r"'folder' needs --data-dir DIR with images/, optionally heatmaps/"):
        open_dataset("folder")
    with pytest.raises(DatasetError, match=r"'imagenet-val' needs --data-dir"):
        open_dataset("imagenet-val")
    with pytest.raises(DatasetError, match=r"takes no --data-dir"):
        open_dataset("sample", "/tmp")


# --- sample ---------------------------------------------------------------------------------------


def test_sample_is_the_shared_imagenet_val_10(shared_data):
    table = _sample_table(shared_data)
    dataset = open_dataset("sample")
    assert dataset.image_ids() == [Path(name).stem for name in sorted(table)]
    assert dataset.labels() == [int(table[name]["class_index"]) for name in sorted(table)]
    assert dataset.has_boxes and dataset.has_labels and dataset.ceiling is None
    assert open_dataset("sample").fingerprint == dataset.fingerprint


def test_sample_items_boxes_and_reference(shared_data):
    table = _sample_table(shared_data)
    dataset = open_dataset("sample")
    items = torch_dataset(dataset, PREP)
    ids = dataset.image_ids()
    k = ids.index("ILSVRC2012_val_00044671")  # three boxes, 225×500
    item = items[k]
    assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0  # mean = std = 0.5
    assert item["label"] == int(table["ILSVRC2012_val_00044671.JPEG"]["class_index"]) == 111
    # Boxes "17 36 127 175;53 201 131 307;1 332 147 498" (inclusive pixels) in a 225×500 image,
    # squashed to the model's 224×224: x · 224/225, y · 224/500, right/bottom edges + 1.
    expected = torch.tensor([[17, 36, 128, 176], [53, 201, 132, 308], [1, 332, 148, 499]], dtype=torch.float64)
    expected *= torch.tensor([224 / 225, 224 / 500, 224 / 225, 224 / 500], dtype=torch.float64)
    # coordinates ≤ 224 after a float32 scale (itself rounded) and the +1: float32_bound(2, 224) ≈ 1.1e-4 (was 1e-4)
    assert torch.allclose(item["boxes"].double(), expected, rtol=0, atol=float32_bound(2, 224.0))
    # The box-derived reference is highest inside the boxes and the mask/ reference agree in rank.
    inside = torch.zeros(224, 224, dtype=torch.bool)
    for x0, y0, x1, y1 in expected.round().int().tolist():
        inside[y0:y1, x0:x1] = True
    assert item["reference"][inside].mean() > 3 * item["reference"][~inside].mean()
    assert spearman(inside.float()[None], item["reference"][None]).item() > 0.7


def test_sample_batches_through_workers_and_paper_protocol():
    dataset = open_dataset("sample")
    batches = list(data_loader(dataset, PREP, batch_size=4, num_workers=2, limit=6))
    assert sorted(int(i) for b in batches for i in b["index"]) == list(range(6))
    counts = torch.cat([b["box_counts"] for b in batches])
    assert counts.tolist() == [1, 1, 1, 1, 1, 1]  # the first six sample images have one box each
    convnext = Preprocessing((224, 224), PREP.mean, PREP.std, paper_kind="convnext")
    paper = torch_dataset(dataset, convnext, "paper")[0]
    aligned = torch_dataset(dataset, convnext, "aligned")[0]
    assert torch.equal(paper["reference"], aligned["reference"])  # the heatmap is not cropped
    # ILSVRC2012_val_00007272 (334×500), box 1 121 326 490: under paper the box follows the crop.
    x0, y0, x1, y1 = aligned["boxes"][0].tolist()
    expected = [
        max(0.0, x0 * 256 / 224 - 16),
        max(0.0, y0 * 256 / 224 - 16),
        min(224.0, x1 * 256 / 224 - 16),
        min(224.0, y1 * 256 / 224 - 16),
    ]
    # both sides' float32 scale/offset roundings of coordinates ≤ 256: float32_bound(4, 256) ≈ 2.4e-4 (was 1e-3)
    assert paper["boxes"][0].tolist() == pytest.approx(expected, abs=float32_bound(4, 256.0))


def test_box_mask_uses_pixel_centres():
    mask = box_mask(np.array([[1.0, 2.0, 3.0, 4.0], [2.6, 0.0, 3.4, 1.0]], dtype=np.float32), 6)
    expected = np.zeros((6, 6), dtype=np.float32)
    expected[2:4, 1:3] = 1  # columns 1, 2 (centres 1.5, 2.5) and rows 2, 3
    assert np.array_equal(mask, expected)  # the thin box holds no pixel centre


# --- imagenet-val ---------------------------------------------------------------------------------


@pytest.fixture
def imagenet_val_dir(tmp_path, shared_data) -> Path:
    """The 10 real val JPEGs beside (links to) the real wsolevaluation metadata."""
    root = tmp_path / "imagenet-val"
    (root / "val").mkdir(parents=True)
    for jpeg in sorted((shared_data / "imagenet-val-10").glob("*.JPEG")):
        (root / "val" / jpeg.name).symlink_to(jpeg)
    for name in ("class_labels.txt", "localization.txt", "image_sizes.txt"):
        (root / name).symlink_to(shared_data / "imagenet-val-boxes" / name)
    return root


def test_imagenet_val_reads_wsolevaluation_boxes_equal_to_the_sample(imagenet_val_dir, shared_data):
    dataset = open_dataset("imagenet-val", imagenet_val_dir)
    sample = open_dataset("sample")
    assert dataset.image_ids() == sample.image_ids()
    assert dataset.labels() == sample.labels()  # wsolevaluation's class_labels.txt agrees with the csv
    ours, theirs = torch_dataset(dataset, PREP, reference_ranks=False), torch_dataset(sample, PREP, reference_ranks=False)
    for k in range(len(dataset)):
        a, b = ours[k], theirs[k]
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["reference"], b["reference"])
        assert torch.equal(a["image"], b["image"])


def test_imagenet_val_missing_metadata_and_missing_boxes(tmp_path, shared_data):
    root = tmp_path / "val-only"
    root.mkdir()
    jpeg = next((shared_data / "imagenet-val-10").glob("*.JPEG"))
    (root / jpeg.name).symlink_to(jpeg)
    with pytest.raises(DatasetError, match=r"needs class_labels\.txt and localization\.txt"):
        open_dataset("imagenet-val", root)
    (root / "class_labels.txt").write_text(f"val/{jpeg.name},3\n")
    (root / "localization.txt").write_text("val/ILSVRC2012_val_00000001.JPEG,1,2,3,4\n")
    dataset = open_dataset("imagenet-val", root)
    with pytest.raises(DatasetError, match=rf"localization\.txt has no box for: {jpeg.name}"):
        dataset.labels()


# --- folder ---------------------------------------------------------------------------------------


def _folder(root: Path, shared_data: Path, n: int = 3, *, labels: bool = False) -> list[Path]:
    (root / "images").mkdir(parents=True)
    (root / "heatmaps").mkdir()
    sources = sorted((shared_data / "imagenet-samples-256" / "images").glob("*.JPEG"))[:n]
    rows = []
    for i, source in enumerate(sources):
        image = Image.open(source).convert("RGB")
        image.save(root / "images" / f"img{i}.png")
        width, height = image.size
        heatmap = np.zeros((height, width), dtype=np.float32)
        heatmap[height // 4 : height // 2, width // 3 : 2 * width // 3] = 1.0 + i
        if i % 2:
            np.save(root / "heatmaps" / f"img{i}.npy", heatmap)
        else:
            Image.fromarray((heatmap * 100).astype(np.uint8)).save(root / "heatmaps" / f"img{i}.png")
        rows.append(f"img{i}.png,{i}")
    if labels:
        (root / "labels.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    return sources


def test_folder_without_labels_uses_top1_targets(tmp_path, shared_data):
    _folder(tmp_path / "f", shared_data)
    dataset = open_dataset("folder", tmp_path / "f")
    assert dataset.image_ids() == ["img0", "img1", "img2"]
    assert dataset.labels() == [-1, -1, -1] and not dataset.has_labels and not dataset.has_boxes
    item = torch_dataset(dataset, PREP)[1]
    assert item["label"] == -1 and item["boxes"].shape == (0, 4)
    assert item["image"].shape == (3, 224, 224) and item["reference"].shape == (224, 224)
    # The .npy heatmap's rectangle, resized with the image: inside it the reference is 2.0.
    # bilinear weights of a constant region: 4 float32 products summed, within float32_relative(2·4) of 2.0
    assert item["reference"][80, 112].item() == pytest.approx(2.0, rel=float32_relative(2 * 4)) and item["reference"][10, 10].item() == 0.0


def test_folder_with_labels_csv(tmp_path, shared_data):
    _folder(tmp_path / "f", shared_data, labels=True)
    dataset = open_dataset("folder", tmp_path / "f")
    assert dataset.labels() == [0, 1, 2] and dataset.has_labels
    assert torch_dataset(dataset, PREP)[2]["label"] == 2
    with pytest.raises(DatasetError, match=r"image img2 has label 2, outside the model's 2 classes"):
        dataset.check_labels(2)


def test_folder_missing_heatmaps_are_listed(tmp_path, shared_data):
    _folder(tmp_path / "f", shared_data, n=3)
    (tmp_path / "f" / "heatmaps" / "img0.png").unlink()
    (tmp_path / "f" / "heatmaps" / "img2.png").unlink()
    with pytest.raises(DatasetError, match=r"no heatmap in .*heatmaps for 2 image\(s\): img0\.png, img2\.png$"):
        open_dataset("folder", tmp_path / "f")


def test_folder_heatmap_of_the_wrong_size(tmp_path, shared_data):
    _folder(tmp_path / "f", shared_data, n=1)
    Image.fromarray(np.zeros((10, 20), dtype=np.uint8)).save(tmp_path / "f" / "heatmaps" / "img0.png")
    dataset = open_dataset("folder", tmp_path / "f")
    with pytest.raises(DatasetError, match=r"heatmap img0\.png is 20×10, but its image img0\.png is \d+×\d+"):
        torch_dataset(dataset, PREP)[0]


def test_folder_colour_heatmap_and_paper_protocol_are_refused(tmp_path, shared_data):
    _folder(tmp_path / "f", shared_data, n=1)
    image = Image.open(tmp_path / "f" / "images" / "img0.png")
    image.save(tmp_path / "f" / "heatmaps" / "img0.png")  # an RGB "heatmap"
    dataset = open_dataset("folder", tmp_path / "f")
    with pytest.raises(DatasetError, match=r"is a RGB image; heatmaps must be grayscale"):
        torch_dataset(dataset, PREP)[0]
    with pytest.raises(DatasetError, match=r"protocol 'paper' does not apply to dataset 'folder'"):
        torch_dataset(dataset, PREP, "paper")


def test_folder_missing_labels_in_csv(tmp_path, shared_data):
    _folder(tmp_path / "f", shared_data, labels=True)
    (tmp_path / "f" / "labels.csv").write_text("img0.png,5\n")
    with pytest.raises(DatasetError, match=r"labels\.csv has no label for: img1\.png, img2\.png"):
        open_dataset("folder", tmp_path / "f").labels()


def test_positions_limit_counts_from_the_start():
    dataset = open_dataset("sample")
    ids = dataset.image_ids()
    assert dataset.positions(limit=4) == [0, 1, 2, 3]
    assert dataset.positions(skip_ids={ids[1], ids[7]}, limit=4) == [0, 2, 3]
    assert dataset.positions(skip_ids=set(ids)) == []


def test_the_loader_is_a_function_of_the_torch_free_dataset():
    from alignbench.datasets import Dataset, collate, data_loader, torch_dataset

    assert not any(hasattr(Dataset, name) for name in ("torch_dataset", "data_loader", "collate"))
    assert {f.__module__ for f in (collate, data_loader, torch_dataset)} == {"alignbench.datasets._torch_data"}
    batch = next(iter(data_loader(open_dataset("sample"), PREP, batch_size=2, num_workers=0, limit=2, reference_ranks=False)))
    assert batch["image"].shape == (2, 3, 224, 224) and batch["image_id"] == open_dataset("sample").image_ids()[:2]

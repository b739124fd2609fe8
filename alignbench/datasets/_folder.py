"""Your own images and reference maps: ``DIR/images/``, ``DIR/heatmaps/``, optional ``DIR/labels.csv``.

A heatmap has its image's stem (``images/cat.jpg`` ↔ ``heatmaps/cat.png`` or ``heatmaps/cat.npy``)
and its image's size; it is a grayscale image file or a 2-D ``.npy`` array (what ``alignbench
explain`` writes). ``labels.csv`` rows are ``filename,label`` (an optional header row is skipped;
the filename may be given with or without its extension); without it every target is the model's
top-1 prediction. Image ids are the image stems.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from alignbench.datasets._base import Dataset, DatasetSpec, FolderSample, Reader, listing, need_data_dir
from alignbench.datasets._file_hashes import fingerprint_files
from alignbench.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover - numpy is imported only where images are decoded
    import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
HEATMAP_SUFFIXES = IMAGE_SUFFIXES | {".npy"}
LABELS_FILE = "labels.csv"


def _files(directory: Path, suffixes: set[str]) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _read_heatmap(path: Path) -> np.ndarray:
    import numpy as np

    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DatasetError(f"cannot read heatmap {path}: {error}") from None
        array = np.squeeze(array)
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise DatasetError(f"heatmap {path} holds an array of shape {array.shape}; a heatmap is a 2-D array of numbers")
        return array.astype(np.float32)
    from PIL import Image

    try:
        with Image.open(path) as opened:
            opened.load()
            heatmap = opened
    except OSError as error:
        raise DatasetError(f"cannot read heatmap {path}: {error}") from None
    if heatmap.mode in ("1", "L", "I", "F", "I;16", "I;16B", "I;16L"):
        return np.array(heatmap, dtype=np.float32)
    if heatmap.mode == "LA":
        return np.array(heatmap.getchannel("L"), dtype=np.float32)
    raise DatasetError(f"heatmap {path} is a {heatmap.mode} image; heatmaps must be grayscale (one channel) or .npy")


class FolderReader(Reader):
    geometry = "folder"

    def __init__(self, images: list[Path], heatmaps: list[Path], labels: list[int]) -> None:
        self.images, self.heatmaps, self.labels = images, heatmaps, labels

    def read(self, index: int) -> FolderSample:
        import numpy as np
        from PIL import Image

        image_path, heatmap_path = self.images[index], self.heatmaps[index]
        try:
            with Image.open(image_path) as opened:
                image = np.array(opened.convert("RGB"), dtype=np.uint8)
        except OSError as error:
            raise DatasetError(f"cannot read image {image_path}: {error}") from None
        heatmap = _read_heatmap(heatmap_path)
        if heatmap.shape != image.shape[:2]:
            raise DatasetError(
                f"heatmap {heatmap_path.name} is {heatmap.shape[1]}×{heatmap.shape[0]} but image {image_path.name} "
                f"is {image.shape[1]}×{image.shape[0]} (width×height); a heatmap must have its image's size"
            )
        return FolderSample(image=image, heatmap=heatmap, label=self.labels[index])


# Header names of the label column when it is not the second one (imagenet-samples-256's labels.csv
# is filename,wnid,class_index,name).
_LABEL_COLUMNS = ("label", "class_index")


def read_labels(path: Path) -> dict[str, int]:
    """``labels.csv`` as filename → class index: rows ``filename,label``, or a header row naming a
    ``label`` / ``class_index`` column."""
    by_name: dict[str, int] = {}
    column = 1
    with open(path, newline="", encoding="utf-8") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) <= column:
                raise DatasetError(f"{path}, line {line_number}: expected 'filename,label', got {','.join(row)!r}")
            name, label = row[0].strip(), row[column].strip()
            try:
                by_name[name] = int(label)
            except ValueError:
                if line_number == 1:  # a header row
                    header = [cell.strip().lower() for cell in row]
                    column = next((header.index(c) for c in _LABEL_COLUMNS if c in header), column)
                    continue
                raise DatasetError(f"{path}, line {line_number}: label {label!r} is not an integer class index") from None
    return by_name


def _read_labels(path: Path, images: list[Path]) -> list[int]:
    by_name = read_labels(path)
    labels, unlabelled = [], []
    for image in images:
        label = by_name.get(image.name, by_name.get(image.stem))
        if label is None:
            unlabelled.append(image.name)
        labels.append(-1 if label is None else label)
    if unlabelled:
        raise DatasetError(f"{path} has no label for: {listing(unlabelled)}; add them, or remove {LABELS_FILE} to use top-1 targets")
    return labels


class FolderDataset(Dataset):
    def __init__(self, spec: DatasetSpec, root: Path, images: list[Path], heatmaps: list[Path], labels_file: Path | None) -> None:
        files = [*images, *heatmaps, *([labels_file] if labels_file else [])]
        names = [f"{file.parent.name}/{file.name}" if file.parent != root else file.name for file in files]
        fingerprint = fingerprint_files("folder-v1", root, names, what="fingerprinting folder")
        super().__init__(
            spec, fingerprint=fingerprint, image_ids=[p.stem for p in images], location=root,
            has_labels=labels_file is not None,
        )
        self.images, self.heatmaps, self.labels_file = images, heatmaps, labels_file
        self._labels: list[int] | None = None

    def labels(self) -> list[int]:
        if self._labels is None:
            self._labels = _read_labels(self.labels_file, self.images) if self.labels_file else [-1] * len(self.images)
        return list(self._labels)

    def reader(self) -> FolderReader:
        return FolderReader(self.images, self.heatmaps, self.labels())


def open_folder(spec: DatasetSpec, data_dir: Path | None, download: bool) -> FolderDataset:
    root = need_data_dir(spec, data_dir, "images/ and heatmaps/ (same stems) and optionally labels.csv")
    image_dir, heatmap_dir = root / "images", root / "heatmaps"
    for directory in (image_dir, heatmap_dir):
        if not directory.is_dir():
            raise DatasetError(f"{root} has no {directory.name}/ directory; the folder dataset needs images/ and heatmaps/")
    images = _files(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"no image in {image_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise DatasetError(f"images {stems[image.stem].name} and {image.name} share a stem; heatmaps are matched by stem")
        stems[image.stem] = image
    heatmap_of: dict[str, Path] = {}
    for heatmap in _files(heatmap_dir, HEATMAP_SUFFIXES):
        if heatmap.stem in stems and heatmap.stem in heatmap_of:
            raise DatasetError(
                f"two heatmaps for image {stems[heatmap.stem].name}: {heatmap_of[heatmap.stem].name} and {heatmap.name}; keep one"
            )
        heatmap_of[heatmap.stem] = heatmap
    missing = [image.name for image in images if image.stem not in heatmap_of]
    if missing:
        raise DatasetError(f"no heatmap in {heatmap_dir} for {len(missing)} image(s): {listing(missing)}")
    labels_file = root / LABELS_FILE
    return FolderDataset(
        spec, root, images, [heatmap_of[image.stem] for image in images], labels_file if labels_file.is_file() else None
    )

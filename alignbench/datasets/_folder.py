"""Your own images, optional reference maps and labels: ``DIR/images/``, optional ``DIR/heatmaps/``
and ``DIR/labels.csv``.

A heatmap has its image's stem (``images/cat.jpg`` ↔ ``heatmaps/cat.png`` or ``heatmaps/cat.npy``)
and its image's size; it is a grayscale image file or a 2-D ``.npy`` array (what ``alignbench
explain`` writes). With ``heatmaps/``, every image needs its heatmap. Without it the folder has no
reference maps (``Dataset.has_reference`` False): only the metrics that never read one (the
faithfulness metrics: ``MetricSpec.needs_reference`` False) can be scored on it, and its fingerprint
covers the images and ``labels.csv``. ``labels.csv`` rows are ``filename,label`` (an optional header
row is skipped, or names a ``label`` / ``class_index`` column; the filename may be given with or
without its extension; an empty label, ``name,``, means no label); an image without a label, or every
image when there is no ``labels.csv``, is explained for the model's top-1 prediction. A label is a
class index from 0: a negative one is refused rather than read as "no label". Image ids are the image
stems.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from alignbench._utils.file_hashes import fingerprint_files
from alignbench.datasets._base import UNLABELLED, Dataset, DatasetSpec, FolderSample, Reader, listing, need_data_dir
from alignbench.datasets._file_checks import GRAYSCALE_MODES, heatmap_shape, image_header, npy_header, size_text
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
        size = heatmap_shape(array.shape)
        if size is None or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise DatasetError(f"heatmap {path} holds {array.dtype} values of shape {array.shape}; {_HEATMAP_ARRAY}")
        return array.reshape(size).astype(np.float32)
    from PIL import Image

    try:
        with Image.open(path) as opened:
            opened.load()
            heatmap = opened
    except OSError as error:
        raise DatasetError(f"cannot read heatmap {path}: {error}") from None
    if heatmap.mode == "LA":
        return np.array(heatmap.getchannel("L"), dtype=np.float32)
    if heatmap.mode in GRAYSCALE_MODES:
        return np.array(heatmap, dtype=np.float32)
    raise DatasetError(f"heatmap {path} is a {heatmap.mode} image; {_HEATMAP_IMAGE}")


_HEATMAP_ARRAY = "a heatmap array is 2-D numbers, [H, W] (or [1, H, W] / [H, W, 1]), the size of its image"
_HEATMAP_IMAGE = "heatmaps must be grayscale (one channel) or .npy"


def _size_mismatch(heatmap_size: tuple[int, int], image: Path, image_size: tuple[int, int]) -> str:
    return (
        f"{size_text(*heatmap_size)}, but its image {image.name} is {size_text(*image_size)} (width×height); "
        "a heatmap must have its image's size"
    )


def _heatmap_problem(path: Path, image_size: tuple[int, int], image: Path) -> str | None:
    """What is wrong with heatmap file ``path`` of an image of ``image_size`` (height, width), from its header."""
    if path.suffix.lower() == ".npy":
        problem, shape, dtype = npy_header(path)
        if problem is not None:
            return problem
        size = heatmap_shape(shape)
        if size is None:
            return f"holds an array of shape {shape}; {_HEATMAP_ARRAY}"
    else:
        problem, size, mode = image_header(path)
        if problem is not None:
            return problem
        if mode not in GRAYSCALE_MODES:
            return f"is a {mode} image; {_HEATMAP_IMAGE}"
    return None if size == image_size else _size_mismatch(size, image, image_size)


class FolderReader(Reader):
    geometry = "folder"
    reference_origin = "its heatmap file"

    def __init__(self, images: list[Path], heatmaps: list[Path] | None, labels: list[int]) -> None:
        self.images, self.heatmaps, self.labels = images, heatmaps, labels  # heatmaps None: no heatmaps/

    def read(self, index: int) -> FolderSample:
        import numpy as np
        from PIL import Image

        image_path = self.images[index]
        try:
            with Image.open(image_path) as opened:
                image = np.array(opened.convert("RGB"), dtype=np.uint8)
        except OSError as error:
            raise DatasetError(f"cannot read image {image_path}: {error}") from None
        if self.heatmaps is None:
            return FolderSample(image=image, heatmap=None, label=self.labels[index])
        heatmap_path = self.heatmaps[index]
        heatmap = _read_heatmap(heatmap_path)
        if heatmap.shape != image.shape[:2]:
            raise DatasetError(f"heatmap {heatmap_path.name} is {_size_mismatch(heatmap.shape, image_path, image.shape[:2])}")
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
            if not label:  # an empty label: this image is explained for its top-1 prediction
                by_name[name] = UNLABELLED
                continue
            try:
                by_name[name] = int(label)
            except ValueError:
                if line_number == 1:  # a header row
                    header = [cell.strip().lower() for cell in row]
                    column = next((header.index(c) for c in _LABEL_COLUMNS if c in header), column)
                    continue
                raise DatasetError(f"{path}, line {line_number}: label {label!r} is not an integer class index") from None
            if by_name[name] < 0:
                raise DatasetError(
                    f"{path}, line {line_number}: label {label} is not a class index (classes are numbered from 0); "
                    f"leave it empty ('{name},') to explain that image's top-1 prediction"
                )
    return by_name


def _read_labels(path: Path, images: list[Path]) -> list[int]:
    by_name = read_labels(path)
    labels, unlabelled = [], []
    for image in images:
        label = by_name.get(image.name, by_name.get(image.stem))
        if label is None:
            unlabelled.append(image.name)
        labels.append(UNLABELLED if label is None else label)
    if unlabelled:
        raise DatasetError(
            f"{path} has no label for: {listing(unlabelled)}; add them (an empty label, 'name,', means the top-1 "
            f"prediction), or remove {LABELS_FILE} to use top-1 targets for every image"
        )
    return labels


class FolderDataset(Dataset):
    def __init__(self, spec: DatasetSpec, root: Path, images: list[Path], heatmaps: list[Path] | None, labels_file: Path | None) -> None:
        # heatmaps None (no heatmaps/): the files are the images and labels.csv; the names differ from
        # any folder's with heatmaps, so the two never share a fingerprint
        files = [*images, *(heatmaps or []), *([labels_file] if labels_file else [])]
        names = [f"{file.parent.name}/{file.name}" if file.parent != root else file.name for file in files]
        fingerprint = fingerprint_files("folder-v1", root, names, what="fingerprinting folder")
        super().__init__(
            spec,
            fingerprint=fingerprint,
            image_ids=[p.stem for p in images],
            location=root,
            has_labels=labels_file is not None,
            has_reference=heatmaps is not None,
        )
        self.images, self.heatmaps, self.labels_file = images, heatmaps, labels_file
        self._labels: list[int] | None = None

    def labels(self) -> list[int]:
        if self._labels is None:
            self._labels = _read_labels(self.labels_file, self.images) if self.labels_file else [UNLABELLED] * len(self.images)
        return list(self._labels)

    def reader(self) -> FolderReader:
        return FolderReader(self.images, self.heatmaps, self.labels())

    def file_problems(self, positions: Iterable[int]) -> list[str]:
        problems = []
        for i in positions:
            image = self.images[i]
            problem, size, _ = image_header(image)
            if problem is not None:
                problems.append(f"images/{image.name}: {problem}")
                continue
            if self.heatmaps is None:
                continue
            heatmap = self.heatmaps[i]
            problem = _heatmap_problem(heatmap, size, image)
            if problem is not None:
                problems.append(f"heatmaps/{heatmap.name}: {problem}")
        return problems


def open_folder(spec: DatasetSpec, data_dir: Path | None, download: bool) -> FolderDataset:
    root = need_data_dir(spec, data_dir, "images/, optionally heatmaps/ (same stems) and labels.csv")
    image_dir, heatmap_dir = root / "images", root / "heatmaps"
    if not image_dir.is_dir():
        raise DatasetError(
            f"{root} has no images/ directory; the folder dataset needs images/ (and heatmaps/ for metrics that read reference maps)"
        )
    images = _files(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"no image in {image_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise DatasetError(
                f"images {stems[image.stem].name} and {image.name} share a stem; an image's id (and its heatmap) is its stem"
            )
        stems[image.stem] = image
    labels_file = root / LABELS_FILE
    labels_file = labels_file if labels_file.is_file() else None
    if not heatmap_dir.is_dir():  # no reference maps: only metrics that never read one can be scored
        return FolderDataset(spec, root, images, None, labels_file)
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
    return FolderDataset(spec, root, images, [heatmap_of[image.stem] for image in images], labels_file)

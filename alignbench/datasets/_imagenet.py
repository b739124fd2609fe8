"""ImageNet images with human-drawn boxes: the embedded ``sample`` and ``imagenet-val`` (torch-free).

Neither has click maps, so the reference map is derived from the boxes and said to be: the union of
the image's boxes as a mask. To share ClickMe's pipeline exactly, an image is squashed (whole, aspect
ratio not kept, so no box is cropped) to the 256×256 that a ClickMe record stores, its mask is drawn
in that frame, and both then go through the ClickMe preprocessing (see ``_pipeline``).

Box files give (x0, y0, x1, y1) as inclusive pixel indices of the original image (ImageNet's
convention: x1 = width - 1 for a box touching the right edge), so a box covers the continuous span
[x0, x1 + 1) × [y0, y1 + 1). imagenet-val reads the wsolevaluation metadata format
(clovaai/wsolevaluation ``metadata/ILSVRC/test``): ``class_labels.txt`` (id,class),
``localization.txt`` (id,x0,y0,x1,y1, one line per box) and optionally ``image_sizes.txt``
(id,w,h: the frame the boxes are in, so resized copies of the JPEGs still line up).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from alignbench._utils.file_hashes import fingerprint_files
from alignbench.datasets._base import CLICKME_SIDE, ClickMeSample, Dataset, DatasetSpec, Reader, listing, need_data_dir
from alignbench.datasets._file_checks import image_header
from alignbench.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover - numpy is imported only where images are decoded
    import numpy as np

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
SAMPLE_LABELS = "labels_bboxes.csv"
_JPEG_SUFFIXES = {".jpeg", ".jpg"}
_WSOL_LABELS, _WSOL_BOXES, _WSOL_SIZES = "class_labels.txt", "localization.txt", "image_sizes.txt"

Box = tuple[float, float, float, float]
# per image, in dataset order: labels, boxes, and the (width, height) frame the boxes are given in
Annotations = tuple[list[int], list[list[Box]], list[tuple[int, int] | None]]


class BoxedImageReader(Reader):
    """Reads an ImageNet JPEG as a ClickMe-layout sample: image and box mask at 256×256."""

    geometry = "clickme"
    reference_origin = "its box mask (no box inside the image, or boxes covering all of it)"

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        boxes: Sequence[Sequence[Box]],
        frames: Sequence[tuple[int, int] | None],
    ) -> None:
        self.paths = list(paths)
        self.labels = list(labels)
        self.boxes = [list(b) for b in boxes]
        self.frames = list(frames)  # (width, height) the boxes are given in; None: the JPEG's own size

    def read(self, index: int) -> ClickMeSample:
        import numpy as np
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except OSError as error:
            raise DatasetError(f"cannot read image {path}: {error}; replace or remove the file") from None
        width, height = self.frames[index] or image.size
        # PIL's bilinear resize filters (antialiases) when shrinking, as a downscaled photo should be.
        square = np.array(image.resize((CLICKME_SIDE, CLICKME_SIDE), Image.BILINEAR), dtype=np.uint8)
        scale = np.array([CLICKME_SIDE / width, CLICKME_SIDE / height] * 2, dtype=np.float64)
        edges = np.array([(x0, y0, x1 + 1, y1 + 1) for x0, y0, x1, y1 in self.boxes[index]], dtype=np.float64).reshape(-1, 4)
        boxes = (edges * scale).astype(np.float32)
        return ClickMeSample(image=square, heatmap=box_mask(boxes, CLICKME_SIDE), label=self.labels[index], boxes=boxes)


def box_mask(boxes: np.ndarray, side: int) -> np.ndarray:
    """float32 [side, side]: 1 where a pixel's centre lies in one of the boxes (x1, y1 exclusive)."""
    import numpy as np

    centres = np.arange(side, dtype=np.float64) + 0.5
    mask = np.zeros((side, side), dtype=bool)
    for x0, y0, x1, y1 in boxes.astype(np.float64):
        rows = (centres >= y0) & (centres < y1)
        columns = (centres >= x0) & (centres < x1)
        mask |= rows[:, None] & columns[None, :]
    return mask.astype(np.float32)


class BoxedImageDataset(Dataset):
    def __init__(
        self,
        spec: DatasetSpec,
        *,
        root: Path,
        image_names: list[str],
        metadata_names: list[str],
        load_annotations: Callable[[list[str]], Annotations],
    ) -> None:
        # Names, not Path objects: imagenet-val lists 50,000 files, and a cached score must be quick.
        fingerprint = fingerprint_files(f"{spec.name}-v1", root, [*image_names, *metadata_names], what=f"fingerprinting {spec.name}")
        self.file_names = [name.rsplit("/", 1)[-1] for name in image_names]
        super().__init__(spec, fingerprint=fingerprint, image_ids=[name.rsplit(".", 1)[0] for name in self.file_names], location=root)
        self.root = root
        self.image_names = image_names
        self._load_annotations = load_annotations
        self._annotations: Annotations | None = None

    def _annotated(self) -> Annotations:
        if self._annotations is None:  # parsed on first use: a cached score never needs it
            self._annotations = self._load_annotations(self.file_names)
        return self._annotations

    def labels(self) -> list[int]:
        return list(self._annotated()[0])

    def reader(self) -> BoxedImageReader:
        labels, boxes, frames = self._annotated()
        paths = [os.path.join(self.root, name) for name in self.image_names]
        return BoxedImageReader(paths, labels, boxes, frames)

    def file_problems(self, positions: Sequence[int]) -> list[str]:
        problems = []
        for i in positions:
            problem = image_header(Path(self.root, self.image_names[i]))[0]
            if problem is not None:
                problems.append(f"{self.image_names[i]}: {problem}")
        return problems


def _parse_box(text: str, where: str) -> Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise DatasetError(f"{where}: a box must be four numbers x0 y0 x1 y1, got {text!r}") from None
    if x1 < x0 or y1 < y0:
        raise DatasetError(f"{where}: box {text!r} has x1 < x0 or y1 < y0")
    return (x0, y0, x1, y1)


# --- sample ---------------------------------------------------------------------------------------


def _read_sample_csv() -> dict[str, tuple[int, tuple[int, int], list[Box]]]:
    table: dict[str, tuple[int, tuple[int, int], list[Box]]] = {}
    with open(SAMPLE_DIR / SAMPLE_LABELS, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            where = f"{SAMPLE_LABELS}, {row['filename']}"
            boxes = [_parse_box(part, where) for part in row["boxes_x0y0x1y1"].split(";") if part.strip()]
            table[row["filename"]] = (int(row["class_index"]), (int(row["width"]), int(row["height"])), boxes)
    return table


def open_sample(spec: DatasetSpec, data_dir: Path | None, download: bool) -> BoxedImageDataset:
    if data_dir is not None:
        raise DatasetError("dataset 'sample' is embedded in the package and takes no --data-dir")
    table = _read_sample_csv()
    names = sorted(table)
    missing = [name for name in names if not (SAMPLE_DIR / name).is_file()]
    if missing:
        raise DatasetError(f"the embedded sample is incomplete (missing {listing(missing)}); reinstall alignbench")

    def annotations(file_names: list[str]) -> Annotations:
        rows = [table[name] for name in file_names]
        return [row[0] for row in rows], [row[2] for row in rows], [row[1] for row in rows]

    return BoxedImageDataset(spec, root=SAMPLE_DIR, image_names=names, metadata_names=[SAMPLE_LABELS], load_annotations=annotations)


# --- imagenet-val ---------------------------------------------------------------------------------


def _metadata_dir(data_dir: Path) -> Path:
    for candidate in (data_dir, data_dir / "metadata" / "ILSVRC" / "test", data_dir / "metadata"):
        if (candidate / _WSOL_LABELS).is_file() and (candidate / _WSOL_BOXES).is_file():
            return candidate
    raise DatasetError(
        f"imagenet-val needs {_WSOL_LABELS} and {_WSOL_BOXES} (wsolevaluation metadata/ILSVRC/test format) "
        f"in {data_dir} or {data_dir / 'metadata' / 'ILSVRC' / 'test'}"
    )


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip().split(",") for line in handle if line.strip()]


def _basename(image_id: str) -> str:
    return image_id.rsplit("/", 1)[-1]


def _wsol_annotations(metadata: Path) -> Callable[[list[str]], Annotations]:
    def load(file_names: list[str]) -> Annotations:
        labels: dict[str, int] = {}
        for row in _rows(metadata / _WSOL_LABELS):
            if len(row) != 2:
                raise DatasetError(f"{metadata / _WSOL_LABELS}: expected 'id,class_index' lines, got {','.join(row)!r}")
            labels[_basename(row[0])] = int(row[1])
        boxes: dict[str, list[Box]] = {}
        for row in _rows(metadata / _WSOL_BOXES):
            if len(row) != 5:
                raise DatasetError(f"{metadata / _WSOL_BOXES}: expected 'id,x0,y0,x1,y1' lines, got {','.join(row)!r}")
            boxes.setdefault(_basename(row[0]), []).append(_parse_box(" ".join(row[1:]), str(metadata / _WSOL_BOXES)))
        frames: dict[str, tuple[int, int]] = {}
        if (metadata / _WSOL_SIZES).is_file():
            for row in _rows(metadata / _WSOL_SIZES):
                frames[_basename(row[0])] = (int(row[1]), int(row[2]))
        unlabelled = [name for name in file_names if name not in labels]
        if unlabelled:
            raise DatasetError(f"{metadata / _WSOL_LABELS} has no class for: {listing(unlabelled)}")
        unboxed = [name for name in file_names if name not in boxes]
        if unboxed:
            raise DatasetError(f"{metadata / _WSOL_BOXES} has no box for: {listing(unboxed)}")
        return [labels[n] for n in file_names], [boxes[n] for n in file_names], [frames.get(n) for n in file_names]

    return load


def open_imagenet_val(spec: DatasetSpec, data_dir: Path | None, download: bool) -> BoxedImageDataset:
    data_dir = need_data_dir(spec, data_dir, "ImageNet val JPEGs (and the wsolevaluation box metadata)")
    metadata = _metadata_dir(data_dir)
    image_dir = data_dir / "val" if (data_dir / "val").is_dir() else data_dir
    with os.scandir(image_dir) as entries:
        found = sorted(e.name for e in entries if os.path.splitext(e.name)[1].lower() in _JPEG_SUFFIXES and e.is_file())
    if not found:
        raise DatasetError(f"no JPEG in {image_dir}; imagenet-val needs the ImageNet val JPEGs (ILSVRC2012_val_*.JPEG)")
    prefix = "" if image_dir == data_dir else "val/"
    metadata_names = [
        (metadata / name).relative_to(data_dir).as_posix()
        for name in (_WSOL_LABELS, _WSOL_BOXES, _WSOL_SIZES)
        if (metadata / name).is_file()
    ]
    return BoxedImageDataset(
        spec,
        root=data_dir,
        image_names=[prefix + name for name in found],
        metadata_names=metadata_names,
        load_annotations=_wsol_annotations(metadata),
    )

"""What every dataset is (torch-free): its registry entry, the opened dataset, and what a reader yields.

Opening a dataset lists its image ids and fingerprints its files without decoding an image or
importing torch, so a cached ``score`` answers from the store alone. ``torch_dataset(dataset, ...)``
(``_torch_data``, which imports torch) turns it into model inputs and reference maps.

Three geometries cover every dataset:

- ``clickme``: a 256×256 RGB image and a 256×256 heatmap, as a ClickMe record stores them, then the
  ClickMe preprocessing (image 256→224, heatmap 256→64 → ClickMe blur → 224). ``clickme-val`` reads
  them from shards; ``sample`` and ``imagenet-val`` make them from an ImageNet JPEG squashed to
  256×256 and its boxes' mask, so all three share one pipeline and one protocol switch.
- ``folder``: an image and a heatmap of the same size, both resized to the model input with
  antialiasing, no crop. A folder without ``heatmaps/`` has no reference maps (``has_reference``
  False): its items carry a NaN reference, so only metrics that never read it can be scored.
- ``fixations``: an image and its eye-tracking fixations (``_fixations``); the image is resized like a
  folder image, the reference map is the fixation density, and items also carry the fixations, the
  density and centre bias at the image's own size, and the other images' fixations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from alignbench.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover - numpy is imported only where images are decoded
    import numpy as np

Geometry = Literal["clickme", "folder", "fixations"]
PROTOCOLS = ("aligned", "paper")
CLICKME_HUMAN_CEILING = 0.65753  # inter-rater Spearman ceiling, Harmonization (Fel et al. 2022)
# ClickMe stores 256×256 images and heatmaps (Harmonization clickme_dataset.py reshapes to (256, 256, c)).
CLICKME_SIDE = 256
UNLABELLED = -1  # the label of an image that has none (folder only): it is explained for its top-1 prediction
# Why a metric that reads the reference map is undefined on a dataset without reference maps.
NO_REFERENCE = "the dataset has no reference maps"


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry: what the dataset is and how to open it."""

    name: str
    description: str
    reference: str  # what the reference ("human") map is, as reports should say it
    needs_data_dir: bool
    has_boxes: bool
    has_labels: bool  # every image has a label (folder: only with labels.csv)
    ceiling: float | None  # human inter-rater ceiling that normalises mean Spearman, if known
    protocols: tuple[str, ...]
    opener: Callable[..., Dataset] = field(repr=False, compare=False)  # (spec, data_dir, download)
    has_fixations: bool = False  # eye-tracking data: the opener also takes fixation_sigma=


@dataclass
class ClickMeSample:
    """A record in the ClickMe layout, decoded (numpy)."""

    image: np.ndarray  # uint8 [256, 256, 3]
    heatmap: np.ndarray  # float32 [256, 256]
    label: int  # ImageNet-1k index, -1 unknown
    # float32 [K, 4]: x0, y0, x1, y1 in the 256×256 frame, continuous pixel edges (pixel c covers
    # [c, c+1)), x1/y1 exclusive — the convention of alignbench.metrics.localisation.
    boxes: np.ndarray


@dataclass
class FolderSample:
    image: np.ndarray  # uint8 [h, w, 3]
    heatmap: np.ndarray | None  # float32 [h, w]; None in a folder without heatmaps/
    label: int


class Reader:
    """Reads sample ``index`` (a position in ``image_ids``) in a DataLoader worker; picklable."""

    geometry: Geometry
    reference_origin: str  # where the reference map comes from, as "constant in <origin>" reads

    def read(self, index: int) -> ClickMeSample | FolderSample:  # pragma: no cover - interface
        raise NotImplementedError


class Dataset:
    """An opened dataset: ids, labels and fingerprint (torch-free). Its torch view is made by
    ``alignbench.datasets.torch_dataset`` / ``data_loader`` (which import torch)."""

    def __init__(
        self,
        spec: DatasetSpec,
        *,
        fingerprint: str,
        image_ids: Sequence[str],
        location: Path | None,
        has_labels: bool | None = None,
        has_reference: bool = True,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.fingerprint = fingerprint
        self.ceiling = spec.ceiling
        self.has_boxes = spec.has_boxes
        self.has_labels = spec.has_labels if has_labels is None else has_labels
        # False: no reference map (a folder without heatmaps/); only metrics that never read one apply
        self.has_reference = has_reference
        # True on eye-tracking datasets (``_fixations``): items carry fixations, density and centre bias
        self.has_fixations = False
        self.fixation_sigma: float | None = None  # their blur in pixels (None: the default)
        self.location = location  # the files read (data dir, cache dir or package data)
        self._image_ids = list(image_ids)

    def __len__(self) -> int:
        return len(self._image_ids)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {len(self)} images, fingerprint {self.fingerprint[:12]}>"

    def image_ids(self) -> list[str]:
        """Stable order: position i here is ``index`` i of the torch dataset."""
        return list(self._image_ids)

    # --- subclasses ---------------------------------------------------------------------------

    def labels(self) -> list[int]:
        """Label per image in ``image_ids`` order; -1 where unknown (the scorer then uses top-1)."""
        raise NotImplementedError

    def reader(self) -> Reader:
        raise NotImplementedError

    def file_problems(self, positions: Sequence[int]) -> list[str]:
        """One line per image at ``positions`` whose files cannot be used, from their headers and sizes
        (see ``_file_checks``). ClickMe records were checked when their shard was indexed: nothing here."""
        return []

    # --- shared -------------------------------------------------------------------------------

    def check_labels(self, num_classes: int) -> None:
        """DatasetError naming the first image whose label is not one of the model's classes.

        Only a dataset whose images may lack a label (``folder``) has UNLABELLED ones, which are
        explained for the top-1 prediction; any other negative label is refused, never read as "no label".
        """
        lowest = 0 if self.spec.has_labels else UNLABELLED
        for image_id, label in zip(self._image_ids, self.labels()):
            if label < lowest or label >= num_classes:
                raise DatasetError(
                    f"{self.name}: image {image_id} has label {label}, outside the model's {num_classes} "
                    f"classes (0–{num_classes - 1}); use a model trained on the dataset's classes or fix the labels"
                )

    def check_files(self, positions: Sequence[int]) -> None:
        """DatasetError naming the first ten images at ``positions`` whose files cannot be used, and how
        many there are; the labels are read (and checked) too. Called before a run is stored."""
        self.labels()
        problems = self.file_problems(positions)
        if problems:
            where = f"{self.name}" + (f" in {self.location}" if self.spec.needs_data_dir and self.location else "")
            raise DatasetError(
                f"{len(problems)} of the {len(positions)} images to score in dataset {where} cannot be used: "
                f"{listing(problems)}; fix or remove them and run again (nothing was stored)"
            )

    def positions(self, *, skip_ids: Iterable[str] = frozenset(), limit: int | None = None) -> list[int]:
        """Indices to serve: the first ``limit`` images (all when None), minus ``skip_ids``.

        ``limit`` counts from the start of the dataset, not after skipping, so a resumed
        ``--limit N`` run finishes the same N images.
        """
        skip = frozenset(skip_ids)
        end = len(self) if limit is None else max(0, min(limit, len(self)))
        return [i for i in range(end) if self._image_ids[i] not in skip]

    def check_protocol(self, protocol: str) -> None:
        """DatasetError unless ``protocol`` is one of PROTOCOLS and applies to this dataset."""
        if protocol not in PROTOCOLS:
            raise DatasetError(f"unknown protocol {protocol!r}; use one of: {', '.join(PROTOCOLS)}")
        if protocol not in self.spec.protocols:
            raise DatasetError(
                f"protocol {protocol!r} does not apply to dataset {self.name!r} "
                f"(it reproduces the ClickMe pipeline); use --protocol {' or '.join(self.spec.protocols)}"
            )


def listing(names: Sequence[str], limit: int = 10) -> str:
    """'a, b, c' or 'a, b, … (and 12 more)' for error messages."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … (and {len(names) - limit} more)"


def need_data_dir(spec: DatasetSpec, data_dir: Path | None, what: str) -> Path:
    if data_dir is None:
        raise DatasetError(f"dataset {spec.name!r} needs --data-dir DIR with {what}")
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DatasetError(f"--data-dir {data_dir} is not a directory; dataset {spec.name!r} needs {what}")
    return data_dir

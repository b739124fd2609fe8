"""Eye-tracking datasets: ``fixations`` (a folder), ``nus-scene`` (the NUS scene set as it ships) and
the embedded ``scene-sample`` (torch-free; numpy is imported where fixations are read).

Layouts:

- ``fixations``: ``DIR/images/`` and either ``DIR/fixations.csv`` — a header row naming the columns
  ``image,x,y`` and optionally ``subject``, ``onset_s``, ``duration_s``; ``image`` is a file of
  ``images/`` (with or without its extension) — or ``DIR/fixations/NAME.png``, binary fixation-point
  maps the size of their image (MIT1003's ``_fixPts``; non-zero = a fixated pixel, read as a fixation
  at (x, y) = (column, row) as pysaliency reads them; a ``_fixPts`` suffix of the stem is dropped).
  Optional ``DIR/labels.csv`` as in ``folder``.
- ``nus-scene``: ``DIR/stimuli/*.jpg`` and ``DIR/tidy/fixations.mat``, a cell array ``fixations``
  with one row per stimulus (in file-name order) and one cell per observer, each an array of rows
  ``[y, x, onset_s, duration_s]`` in MATLAB's 1-based coordinates (1 subtracted here).

Coordinates are pysaliency's: x = column, y = row, 0-based continuous pixels of the image file, the
pixel of x is floor(x). A fixation must lie in −1 < x ≤ width − 1, −1 < y ≤ height − 1 (the range of
1-based MATLAB data, 0 < x ≤ width, minus 1), with 1e-6 px of slack above for coordinates rounded
when written as decimals; anything further out is refused before a run exists. An image without fixations is served with N = 0 (its density and the
metrics that read fixations are undefined: NULL with that reason).

The fixation sigma (``fixation_sigma``, pixels of the image; None: 0.03 of each image's longer side)
is part of the dataset's fingerprint, so runs made with different sigmas never share stored results.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alignbench._utils.cache import sha256_text
from alignbench._utils.file_hashes import fingerprint_files
from alignbench.datasets._base import UNLABELLED, Dataset, DatasetSpec, Reader, listing, need_data_dir
from alignbench.datasets._file_checks import image_header, size_text
from alignbench.datasets._folder import IMAGE_SUFFIXES, LABELS_FILE, _files, _read_labels
from alignbench.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

SCENE_SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "scene-sample"
FIXATIONS_CSV = "fixations.csv"
FIXPTS_DIR = "fixations"
NUS_MAT = Path("tidy") / "fixations.mat"
_SLACK = 1e-6  # pixels above w − 1: rounding of coordinates written as decimals (−1 itself is MATLAB's 0: outside)
_CSV_COLUMNS = ("image", "x", "y")
_OPTIONAL_COLUMNS = ("subject", "onset_s", "duration_s")


@dataclass
class FixationSample:
    image: np.ndarray  # uint8 [h, w, 3]
    fixations: np.ndarray  # float64 [N, 2] (x, y)
    density: np.ndarray  # float32 [h, w], sums to 1 (all NaN when N = 0)
    baseline: np.ndarray  # float32 [h, w], sums to 1 (all NaN when no other image has fixations)
    other_fixations: np.ndarray  # float64 [M, 2], the other images' fixations rescaled to this size
    label: int

    @property
    def heatmap(self) -> np.ndarray:  # the reference map at stimulus size, as other samples call it
        return self.density


class FixationReader(Reader):
    geometry = "fixations"
    reference_origin = "its fixations"

    def __init__(
        self,
        images: list[Path],
        fixations: list[np.ndarray],
        sizes: list[tuple[int, int]],
        sigma: float | None,
        labels: list[int],
        fingerprint: str,
    ) -> None:
        self.images, self.fixations, self.sizes, self.sigma, self.labels = images, fixations, sizes, sigma, labels
        self.fingerprint = fingerprint

    def sigma_of(self, index: int) -> float:
        from alignbench.datasets._fixation_maps import default_sigma

        return default_sigma(*self.sizes[index]) if self.sigma is None else self.sigma

    def density(self, index: int) -> np.ndarray:
        """float32 [h, w] fixation density of image ``index`` (cached)."""
        from alignbench.datasets import _fixation_maps as maps

        return maps.MapCache(self.fingerprint).get(
            "density", index, lambda: maps.density(self.fixations[index], *self.sizes[index], self.sigma_of(index))
        )

    def baseline(self, index: int) -> np.ndarray:
        """float32 [h, w] centre bias of image ``index`` (cached with every image of its size)."""
        from alignbench.datasets import _fixation_maps as maps

        sigma = self.sigma_of(index)
        group = [j for j, size in enumerate(self.sizes) if size == self.sizes[index] and self.sigma_of(j) == sigma]
        return maps.MapCache(self.fingerprint).get("baseline", index, lambda: maps.centre_biases(group, self.fixations, self.sizes, sigma))

    def read(self, index: int) -> FixationSample:
        import numpy as np
        from PIL import Image

        from alignbench.datasets._fixation_maps import other_fixations

        path = self.images[index]
        try:
            with Image.open(path) as opened:
                image = np.array(opened.convert("RGB"), dtype=np.uint8)
        except OSError as error:
            raise DatasetError(f"cannot read image {path}: {error}; replace or remove the file") from None
        if image.shape[:2] != self.sizes[index]:
            raise DatasetError(f"image {path} changed size since the dataset was opened; open it again")
        return FixationSample(
            image=image,
            fixations=self.fixations[index],
            density=self.density(index),
            baseline=self.baseline(index),
            other_fixations=other_fixations(index, self.fixations, self.sizes),
            label=self.labels[index],
        )


class FixationDataset(Dataset):
    """Images with eye-tracking fixations; the reference map is the fixation density."""

    def __init__(
        self,
        spec: DatasetSpec,
        root: Path,
        *,
        images: list[Path],
        fixations: list[np.ndarray],
        sizes: list[tuple[int, int]],
        files: list[str],
        labels_file: Path | None,
        sigma: float | None,
    ) -> None:
        from alignbench.datasets._fixation_maps import sigma_text

        content = fingerprint_files(f"{spec.name}-v1", root, files, what=f"fingerprinting {spec.name}")
        super().__init__(
            spec,
            fingerprint=sha256_text(content, f"fixation-sigma={sigma_text(sigma)}"),
            image_ids=[image.stem for image in images],
            location=root,
            has_labels=labels_file is not None,
            has_reference=True,
        )
        self.has_fixations = True
        self.fixation_sigma = sigma
        self.images, self.fixations, self.sizes, self.labels_file = images, fixations, sizes, labels_file
        self._labels: list[int] | None = None
        _remember_sigma(self.fingerprint, sigma)

    def fixation_counts(self) -> list[int]:
        return [len(f) for f in self.fixations]

    def labels(self) -> list[int]:
        if self._labels is None:
            self._labels = _read_labels(self.labels_file, self.images) if self.labels_file else [UNLABELLED] * len(self.images)
        return list(self._labels)

    def reader(self) -> FixationReader:
        return FixationReader(self.images, self.fixations, self.sizes, self.fixation_sigma, self.labels(), self.fingerprint)

    def file_problems(self, positions: Iterable[int]) -> list[str]:
        problems = []
        for i in positions:
            image = self.images[i]
            problem, size, _ = image_header(image)
            if problem is not None:
                problems.append(f"{image.parent.name}/{image.name}: {problem}")
            elif size != self.sizes[i]:
                problems.append(f"{image.parent.name}/{image.name}: changed size since the dataset was opened")
        return problems


# --- sigma of a stored fingerprint ----------------------------------------------------------------
# A stored run records the dataset's name, location and fingerprint; the fingerprint covers the sigma
# but cannot be inverted, so the sigma each fingerprint was opened with is remembered here for
# ``reopen_dataset`` (the HTML report's galleries reopen the dataset a run read).


def _sigma_file() -> Path:
    from alignbench._utils.cache import cache_dir

    return cache_dir("fixation-maps") / "sigmas.json"


def _remember_sigma(fingerprint: str, sigma: float | None) -> None:
    known = remembered_sigmas()
    if fingerprint in known and known[fingerprint] == sigma:
        return
    known[fingerprint] = sigma
    import os
    import tempfile

    path = _sigma_file()
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".sigmas-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(known, handle)
        os.replace(temporary, path)
    except OSError:  # a read-only cache: reopening then needs the default sigma
        pass


def remembered_sigmas() -> dict[str, float | None]:
    try:
        with open(_sigma_file(), encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


# --- reading ----------------------------------------------------------------------------------------


def _sizes(images: list[Path], where: str) -> list[tuple[int, int]]:
    """(height, width) of every image from its header; DatasetError listing the unreadable ones."""
    sizes, problems = [], []
    for image in images:
        problem, size, _ = image_header(image)
        if problem is not None:
            problems.append(f"{image.name} ({problem})")
        sizes.append(size)
    if problems:
        raise DatasetError(f"{len(problems)} image(s) in {where} cannot be read: {listing(problems)}; replace or remove them")
    return sizes


def _check_inside(points: np.ndarray, size: tuple[int, int], where: Callable[[int], str], image: str) -> None:
    """DatasetError naming the first fixation outside −1 < x ≤ w − 1, −1 < y ≤ h − 1 (± rounding)."""
    import numpy as np

    height, width = size
    if len(points) == 0:
        return
    x, y = points[:, 0], points[:, 1]
    bad = ~np.isfinite(points).all(axis=1)
    bad |= (x <= -1) | (x > width - 1 + _SLACK) | (y <= -1) | (y > height - 1 + _SLACK)
    if bad.any():
        k = int(np.argmax(bad))
        raise DatasetError(
            f"{where(k)}: fixation (x={x[k]:g}, y={y[k]:g}) is outside image {image} ({size_text(height, width)} width×height; "
            f"0-based coordinates must satisfy -1 < x <= {width - 1}, -1 < y <= {height - 1}); fix or remove it"
        )


def _by_stem(images: list[Path]) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise DatasetError(f"images {stems[image.stem].name} and {image.name} share a stem; an image's id is its stem")
        stems[image.stem] = image
    return stems


def _read_fixations_csv(path: Path, images: list[Path], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    import numpy as np

    stems = _by_stem(images)
    position = {image: i for i, image in enumerate(images)}
    rows: list[list[tuple[float, float]]] = [[] for _ in images]
    lines: list[list[str]] = [[] for _ in images]
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        names = [cell.strip().lower() for cell in header or []]
        missing = [c for c in _CSV_COLUMNS if c not in names]
        if missing:
            raise DatasetError(
                f"{path}, line 1: the header must name the columns image,x,y (optionally {','.join(_OPTIONAL_COLUMNS)}); "
                f"{','.join(missing)} missing in {','.join(header or [])!r}"
            )
        col_image, col_x, col_y = (names.index(c) for c in _CSV_COLUMNS)
        width = max(col_image, col_x, col_y) + 1
        for line_number, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < width:
                raise DatasetError(f"{path}, line {line_number}: expected {len(names)} columns ({','.join(names)}), got {','.join(row)!r}")
            name = row[col_image].strip()
            image = stems.get(name) or stems.get(Path(name).stem)
            if image is None or name not in (image.name, image.stem):
                raise DatasetError(
                    f"{path}, line {line_number}: image {name!r} is not in {images[0].parent}; add the image or remove its rows"
                )
            try:
                x, y = float(row[col_x]), float(row[col_y])
            except ValueError:
                raise DatasetError(f"{path}, line {line_number}: x and y must be numbers, got {row[col_x]!r}, {row[col_y]!r}") from None
            i = position[image]
            rows[i].append((x, y))
            lines[i].append(f"{path.name}, line {line_number}")
    fixations = [np.array(r, dtype=np.float64).reshape(-1, 2) for r in rows]
    for i, points in enumerate(fixations):
        _check_inside(points, sizes[i], lines[i].__getitem__, images[i].name)
    return fixations


def read_fixation_points(path: Path) -> np.ndarray:
    """float64 [N, 2] (x, y) of a binary fixation-point map: one fixation at (column, row) of each
    non-zero pixel, in row-major order (pysaliency's reading of MIT1003's ``_fixPts``)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as opened:
            # a palette index is not a colour (index 5 may be black); an alpha channel is not a fixation
            image = opened.convert("RGBA") if opened.mode == "P" else opened
            array = np.array(image)
            if image.mode in ("LA", "RGBA", "La", "RGBa"):
                array = array[..., :-1]
    except OSError as error:
        raise DatasetError(f"cannot read fixation map {path}: {error}; replace it") from None
    if array.ndim == 3:
        array = array.any(axis=2)
    rows, cols = np.nonzero(array)
    return np.stack([cols, rows], axis=1).astype(np.float64)


def _fixpts_files(directory: Path, images: list[Path], sizes: list[tuple[int, int]]) -> list[Path]:
    stems = _by_stem(images)
    of_image: dict[str, Path] = {}
    for path in _files(directory, IMAGE_SUFFIXES):
        stem = path.stem.removesuffix("_fixPts")
        if stem not in stems:
            raise DatasetError(f"{directory / path.name}: no image {stem}.* in {images[0].parent}; add the image or remove the map")
        if stem in of_image:
            raise DatasetError(f"two fixation maps for image {stems[stem].name}: {of_image[stem].name} and {path.name}; keep one")
        of_image[stem] = path
    missing = [image.name for image in images if image.stem not in of_image]
    if missing:
        raise DatasetError(
            f"no fixation map in {directory} for {len(missing)} image(s): {listing(missing)}; "
            "add NAME.png (an all-black map for an image without fixations)"
        )
    files = [of_image[image.stem] for image in images]
    for path, image, size in zip(files, images, sizes):
        problem, map_size, _ = image_header(path)
        if problem is not None:
            raise DatasetError(f"{path}: {problem}; replace it")
        if map_size != size:
            raise DatasetError(
                f"{path} is {size_text(*map_size)} but its image {image.name} is {size_text(*size)} (width×height); "
                "a fixation map must have its image's size"
            )
    return files


def open_fixations(spec: DatasetSpec, data_dir: Path | None, download: bool, *, fixation_sigma: float | None = None) -> FixationDataset:
    from alignbench.datasets._fixation_maps import check_sigma

    sigma = check_sigma(fixation_sigma)
    what = "images/ and fixations.csv (image,x,y) or fixations/NAME.png, optionally labels.csv"
    root = need_data_dir(spec, data_dir, what) if spec.needs_data_dir else SCENE_SAMPLE_DIR
    return _open_fixation_folder(spec, root, sigma, what)


def _open_fixation_folder(spec: DatasetSpec, root: Path, sigma: float | None, what: str) -> FixationDataset:
    image_dir, csv_path, fixpts_dir = root / "images", root / FIXATIONS_CSV, root / FIXPTS_DIR
    if not image_dir.is_dir():
        raise DatasetError(f"{root} has no images/ directory; the {spec.name} dataset needs {what}")
    images = _files(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"no image in {image_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if csv_path.is_file() and fixpts_dir.is_dir():
        raise DatasetError(f"{root} has both {FIXATIONS_CSV} and {FIXPTS_DIR}/; keep one of them")
    sizes = _sizes(images, str(image_dir))
    labels_file = root / LABELS_FILE
    labels_file = labels_file if labels_file.is_file() else None
    names = [f"images/{image.name}" for image in images]
    if csv_path.is_file():
        fixations = _read_fixations_csv(csv_path, images, sizes)
        names.append(FIXATIONS_CSV)
    elif fixpts_dir.is_dir():
        maps = _fixpts_files(fixpts_dir, images, sizes)
        fixations = [read_fixation_points(path) for path in maps]
        names += [f"{FIXPTS_DIR}/{path.name}" for path in maps]
    else:
        raise DatasetError(f"{root} has neither {FIXATIONS_CSV} nor {FIXPTS_DIR}/; the {spec.name} dataset needs {what}")
    if labels_file is not None:
        names.append(LABELS_FILE)
    return FixationDataset(spec, root, images=images, fixations=fixations, sizes=sizes, files=names, labels_file=labels_file, sigma=sigma)


def read_nus_fixations(mat_path: Path, count: int) -> tuple[list[np.ndarray], list[list[int]]]:
    """Per stimulus (file-name order): float64 [N, 2] (x, y) 0-based, and each fixation's observer
    (1-based column of the cell array), observers in order and each observer's rows in order."""
    import numpy as np

    try:
        from scipy.io import loadmat

        cells = loadmat(str(mat_path))["fixations"]
    except (OSError, ValueError, KeyError, NotImplementedError, TypeError) as error:
        what = "no variable 'fixations'" if isinstance(error, KeyError) else str(error) or type(error).__name__
        raise DatasetError(
            f"cannot read {mat_path} ({what}); it must be the NUS scene set's tidy/fixations.mat "
            "(a cell array 'fixations', one row per stimulus)"
        ) from None
    if cells.dtype != object or cells.ndim != 2 or cells.shape[0] != count:
        raise DatasetError(
            f"{mat_path}: 'fixations' is {cells.dtype} of shape {cells.shape}, expected a cell array with one row per "
            f"stimulus ({count} in stimuli/); use the fixations.mat shipped with these stimuli"
        )
    fixations, subjects = [], []
    for i in range(count):
        points, observers = [], []
        for j in range(cells.shape[1]):
            cell = np.asarray(cells[i, j], dtype=np.float64) if cells[i, j].size else np.zeros((0, 4))
            if cell.ndim != 2 or cell.shape[1] < 2:
                raise DatasetError(
                    f"{mat_path}: cell ({i + 1}, {j + 1}) has shape {cell.shape}, expected rows [y, x, onset, duration]; "
                    "use the fixations.mat shipped with these stimuli"
                )
            points.append(cell[:, [1, 0]] - 1.0)  # [y, x] 1-based → (x, y) 0-based
            observers += [j + 1] * len(cell)
        fixations.append(np.concatenate(points))
        subjects.append(observers)
    return fixations, subjects


def _mat_row(i: int, name: str) -> Callable[[int], str]:
    return lambda k: f"{NUS_MAT}, stimulus {i + 1} ({name}), fixation {k + 1} (1-based values minus 1)"


def open_nus_scene(spec: DatasetSpec, data_dir: Path | None, download: bool, *, fixation_sigma: float | None = None) -> FixationDataset:
    from alignbench.datasets._fixation_maps import check_sigma

    sigma = check_sigma(fixation_sigma)
    root = need_data_dir(spec, data_dir, "stimuli/*.jpg and tidy/fixations.mat (the NUS scene set as it ships)")
    stimuli, mat_path = root / "stimuli", root / NUS_MAT
    if not stimuli.is_dir() or not mat_path.is_file():
        raise DatasetError(
            f"{root} has no {'stimuli/' if not stimuli.is_dir() else NUS_MAT}; nus-scene reads the dataset's own layout "
            "(stimuli/*.jpg, tidy/fixations.mat); for a CSV of fixations use --dataset fixations"
        )
    images = _files(stimuli, IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"no image in {stimuli}")
    sizes = _sizes(images, str(stimuli))
    fixations, _ = read_nus_fixations(mat_path, len(images))
    for i, points in enumerate(fixations):
        _check_inside(points, sizes[i], _mat_row(i, images[i].name), images[i].name)
    names = [f"stimuli/{image.name}" for image in images] + [NUS_MAT.as_posix()]
    return FixationDataset(spec, root, images=images, fixations=fixations, sizes=sizes, files=names, labels_file=None, sigma=sigma)

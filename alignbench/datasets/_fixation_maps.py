"""Fixation density and centre bias of eye-tracking data (numpy/scipy, torch-free), cached.

Coordinates follow pysaliency: x = column, y = row, 0-based continuous pixels of the stimulus, and the
pixel of x is ``floor(x)`` (clipped into the image: MIT/NUS coordinates reach −1 < x ≤ width − 1).

- **Fixation map**: a [h, w] histogram, +1 at the pixel of every fixation (duplicates counted), as
  pysaliency's ``FixationMap`` fills it (``fill_fixation_map``).
- **Density**: the fixation map blurred with a Gaussian of ``sigma`` pixels, scipy's
  ``gaussian_filter(map, sigma, mode="reflect", truncate=4)`` (pysaliency's ``FixationMap``
  ``convolution_mode`` default and its baseline's blur), normalised to sum 1.
- **Centre bias** of image i: the leave-one-out average fixation density of the *other* images: each
  other image j's fixations rescaled to image i's size (x·w_i/w_j, y·h_i/h_j, as the shuffled-AUC
  negatives), made into a fixation map weighted 1/N_j (so every image counts once, whatever its
  number of fixations), summed, blurred with image i's sigma and normalised to sum 1. For images of
  the same size this is exactly the mean of their densities; across sizes the fixations are
  rescaled, not the maps resampled. All images of one size (one sigma) are computed together from
  one blur of every image's map, minus each image's own density (``centre_biases``).

The blur is separable, and the direct way (``scipy.ndimage``) is too slow for the large images: at
the default sigma (0.03 of the longer side) a 3888×2592 image has a 933-tap kernel, 933 multiply-adds
per pixel and pass (about 20 s). So a fixation map of one image (few non-zero rows and columns) is
blurred as two thin matrix products with the 1-D blur operators restricted to those rows and columns,
and a dense map (the centre bias) by real FFTs of the reflect-extended lines, O(log n) per pixel
whatever the sigma. Both extend the image as scipy's ``reflect`` (d c b a | a b c d | d c b a),
repeated when the kernel is longer than the image, and equal ``gaussian_filter`` to float rounding
(tested).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

# pysaliency's baseline models blur with a bandwidth relative to the image size; 0.03 of the longer
# side is the default here where a dataset does not document its pixels per degree of visual angle.
DEFAULT_SIGMA_FRACTION = 0.03
TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: the kernel reaches 4 sigma


def default_sigma(height: int, width: int) -> float:
    return DEFAULT_SIGMA_FRACTION * max(height, width)


def pixel_indices(fixations: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels of ``fixations`` [N, 2] (x, y): floor, clipped into the image."""
    cols = np.clip(np.floor(fixations[:, 0]), 0, width - 1).astype(np.int64)
    rows = np.clip(np.floor(fixations[:, 1]), 0, height - 1).astype(np.int64)
    return rows, cols


def fixation_map(fixations: np.ndarray, height: int, width: int, weight: float = 1.0) -> np.ndarray:
    """float64 [h, w]: ``weight`` added at the pixel of every fixation (duplicates counted)."""
    histogram = np.zeros((height, width), dtype=np.float64)
    rows, cols = pixel_indices(fixations, height, width)
    np.add.at(histogram, (rows, cols), weight)
    return histogram


def gaussian_kernel(sigma: float) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian kernel: radius int(4σ + 0.5), exp(−x²/2σ²) normalised to sum 1."""
    radius = int(TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 / (sigma * sigma) * x**2)
    return weights / weights.sum()


def gaussian_blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(array, sigma, mode="reflect")`` of a 2-D float64 array, as
    matrix products where few rows and columns hold values, else by FFT (module docstring). sigma 0:
    the array itself."""
    array = np.asarray(array, dtype=np.float64)
    if sigma <= 0:
        return array.copy()
    rows, columns = np.flatnonzero(array.any(axis=1)), np.flatnonzero(array.any(axis=0))
    if rows.size <= SPARSE_LINES and columns.size <= SPARSE_LINES:
        return blur_sparse(array, sigma, rows, columns)
    return blur_fft(array, sigma)


# A fixation map with at most this many non-zero rows and columns (one image's fixations) is blurred
# as By[:, rows] @ map[rows, columns] @ Bx[:, columns]ᵀ: h·c·w multiply-adds (0.5 G for 100 columns of
# a 2592×3888 image), below the FFT's cost on lines of that length; the centre bias (every image's
# fixations) takes the FFT.
SPARSE_LINES = 256


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """scipy's ``reflect`` extension (d c b a | a b c d | d c b a), repeated: the source index of ``index``."""
    folded = np.mod(index, 2 * n)
    return np.where(folded >= n, 2 * n - 1 - folded, folded)


def blur_operator(n: int, sigma: float, lines: np.ndarray) -> np.ndarray:
    """float64 [n, len(lines)]: column j is the 1-D reflect-mode Gaussian blur of a unit impulse at
    ``lines[j]`` (output i sums the kernel weights k whose tap i + k reflects onto the impulse)."""
    kernel = gaussian_kernel(sigma)
    radius = kernel.size // 2
    taps = _reflect(np.arange(n)[:, None] + np.arange(-radius, radius + 1)[None, :], n)  # [n, 2r + 1]
    column_of = np.full(n, -1)
    column_of[lines] = np.arange(len(lines))
    hit = column_of[taps] >= 0
    operator = np.zeros((n, len(lines)), dtype=np.float64)
    output = np.broadcast_to(np.arange(n)[:, None], taps.shape)
    weights = np.broadcast_to(kernel[None, :], taps.shape)
    np.add.at(operator, (output[hit], column_of[taps[hit]]), weights[hit])
    return operator


def blur_sparse(array: np.ndarray, sigma: float, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    height, width = array.shape
    along_rows = blur_operator(height, sigma, rows)  # [h, r]
    along_columns = blur_operator(width, sigma, columns)  # [w, c]
    return (along_rows @ array[np.ix_(rows, columns)]) @ along_columns.T


def blur_fft(array: np.ndarray, sigma: float) -> np.ndarray:
    """Along the rows, then along the columns of the transposed result (FFTs along the contiguous axis
    are several times faster than strided ones): each line extended by reflection (radius on each
    side), convolved with the kernel by real FFTs of a fast length, the valid part kept."""
    kernel = gaussian_kernel(sigma)
    rows = _blur_lines(array, kernel)
    return _blur_lines(np.ascontiguousarray(rows.T), kernel).T


def _blur_lines(array: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    from scipy import fft

    radius = kernel.size // 2
    n = array.shape[1]
    extended = array[:, _reflect(np.arange(-radius, n + radius), n)]
    length = fft.next_fast_len(extended.shape[1] + kernel.size - 1, real=True)
    spectrum = fft.rfft(extended, length, axis=1)
    spectrum *= fft.rfft(kernel, length)
    # full-convolution index j + 2r is output j (the kernel's centre r, the extension r)
    return fft.irfft(spectrum, length, axis=1)[:, 2 * radius : 2 * radius + n]


def density(fixations: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """float64 [h, w], sums to 1: the fixations' map blurred with ``sigma``; all NaN without fixations."""
    if len(fixations) == 0:
        return np.full((height, width), np.nan)
    return _normalised(gaussian_blur(fixation_map(fixations, height, width), sigma))


def rescaled(fixations: np.ndarray, source: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """Fixations [N, 2] (x, y) of an image of ``source`` (h, w) size, rescaled to ``target`` (h, w)."""
    scale = np.array([target[1] / source[1], target[0] / source[0]], dtype=np.float64)
    return fixations * scale


def other_fixations(index: int, fixations: list[np.ndarray], sizes: list[tuple[int, int]]) -> np.ndarray:
    """float64 [M, 2]: the fixations of every image but ``index``, rescaled to its size."""
    target = sizes[index]
    parts = [rescaled(f, sizes[j], target) for j, f in enumerate(fixations) if j != index and len(f)]
    return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.float64)


def centre_bias(index: int, fixations: list[np.ndarray], sizes: list[tuple[int, int]], sigma: float) -> np.ndarray:
    """float64 [h, w] of image ``index``, sums to 1: the leave-one-out average fixation density of the
    other images (module docstring); all NaN when no other image has fixations."""
    height, width = sizes[index]
    histogram = np.zeros((height, width), dtype=np.float64)
    for j, points in enumerate(fixations):
        if j == index or len(points) == 0:
            continue
        rows, cols = pixel_indices(rescaled(points, sizes[j], (height, width)), height, width)
        np.add.at(histogram, (rows, cols), 1.0 / len(points))
    if not histogram.any():
        return np.full((height, width), np.nan)
    return _normalised(gaussian_blur(histogram, sigma))


def centre_biases(group: list[int], fixations: list[np.ndarray], sizes: list[tuple[int, int]], sigma: float) -> dict[int, np.ndarray]:
    """``centre_bias`` of every image in ``group`` (one size, one sigma) at the cost of one dense blur:
    blur is linear, so image i's map is the blur of every image's weighted fixation map (one per size)
    minus the blur of its own, which is its density (reflect borders keep the mass: it sums to 1)."""
    height, width = sizes[group[0]]
    histogram = np.zeros((height, width), dtype=np.float64)
    contributing = 0
    for j, points in enumerate(fixations):
        if len(points):
            rows, cols = pixel_indices(rescaled(points, sizes[j], (height, width)), height, width)
            np.add.at(histogram, (rows, cols), 1.0 / len(points))
            contributing += 1
    total = gaussian_blur(histogram, sigma) if contributing else histogram
    biases = {}
    for i in group:
        own = len(fixations[i]) > 0
        if contributing - own == 0:
            biases[i] = np.full((height, width), np.nan)
        elif not own:
            biases[i] = _normalised(total)
        else:
            own_map = gaussian_blur(fixation_map(fixations[i], height, width, 1.0 / len(fixations[i])), sigma)
            biases[i] = _normalised(total - own_map)
    return biases


def _normalised(blurred: np.ndarray) -> np.ndarray:
    # FFT rounding can leave values of about −1e-17 where the density is 0
    blurred = np.maximum(blurred, 0.0)
    return blurred / blurred.sum()


# Bumped when the maps' definition or computation changes, so older cached maps are not read.
MAPS_VERSION = 1


class MapCache:
    """Densities and centre biases of one dataset (its fingerprint covers the sigma), one ``.npy``
    float32 file per image and kind under ``<cache>/fixation-maps/v<MAPS_VERSION>-<fingerprint>/``; computed on first
    use (in whichever DataLoader worker asks first) and written atomically, so concurrent workers at
    worst compute a map twice."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self._directory: Path | None = None

    @property
    def directory(self) -> Path:
        if self._directory is None:
            from alignbench._utils.cache import cache_dir

            self._directory = cache_dir("fixation-maps", f"v{MAPS_VERSION}-{self.fingerprint[:32]}")
        return self._directory

    def get(self, kind: str, index: int, compute) -> np.ndarray:
        """The cached map, else ``compute()`` stored: an array, or a dict index → array of maps
        computed together (all stored)."""
        cached = self.load(kind, index)
        if cached is not None:
            return cached
        computed = compute()
        for j, array in (computed if isinstance(computed, dict) else {index: computed}).items():
            self.store(kind, j, array)
        return self.load(kind, index)

    def load(self, kind: str, index: int) -> np.ndarray | None:
        try:
            return np.load(self.directory / f"{index}-{kind}.npy", allow_pickle=False)
        except (OSError, ValueError):
            return None

    def store(self, kind: str, index: int, array: np.ndarray) -> None:
        path = self.directory / f"{index}-{kind}.npy"
        array = np.asarray(array, dtype=np.float32)
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{index}-{kind}-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def sigma_text(sigma: float | None) -> str:
    """The sigma as the dataset's identity and reports say it."""
    if sigma is None:
        return f"{DEFAULT_SIGMA_FRACTION} of the longer side"
    return f"{sigma:g} px"


def check_sigma(sigma: float | None) -> float | None:
    from alignbench.errors import DatasetError

    if sigma is None:
        return None
    value = float(sigma)
    if not math.isfinite(value) or value < 0:
        raise DatasetError(f"--fixation-sigma {sigma} is not a width in pixels; give a number ≥ 0 (0: no blur), or omit it for the default")
    return value

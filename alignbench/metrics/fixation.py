"""The saliency benchmark's metrics against human eye fixations (MIT/Tübingen), one image at a time.

Each function takes ONE image's arrays (numpy or torch, [H, W] maps at the stimulus's own size) and
returns a float. Fixations are ``xs`` (columns) and ``ys`` (rows) in 0-based continuous pixel
coordinates of the stimulus, pysaliency's convention: the pixel of x is floor(x) (a value in (−1, 0)
— a MATLAB 1-based coordinate in (0, 1) minus 1 — is pixel 0, as pysaliency's ``astype(int)``
truncation makes it). Duplicated fixations are counted as often as they occur, as pysaliency does.

The conventions are pysaliency's (``pysaliency/metrics.py``, ``roc_cython.pyx`` ``general_roc``,
``saliency_map_models.py``); where MIT's MATLAB code (cvzoya/saliency ``code_forMetrics``) differs,
each function's docstring says how. Differences common to all of them:

- MIT's code resizes the map to the fixation map with ``imresize`` (bicubic, antialiased); here the
  map is given at the stimulus size (the scorer upsamples it bilinearly, align_corners=False).
- MIT's code reads fixations from a binary fixation map, so two fixations on one pixel count once;
  here (pysaliency) each fixation counts.

Undefined values are NaN, never a convention: an image without fixations, a map with NaN/±inf, and
(for NSS and CC, where pysaliency returns the unnormalised value or 0) a constant map. The scorer
stores NaN as NULL with the reason (``alignbench.metrics.constancy`` also NULLs every metric of a map
that is constant up to rounding).

Speed: vectorised numpy; sums are accumulated in float64 over blocks of 16,384 values (a float32 map
is never copied whole to float64), and no metric sorts the map. A map's statistics (sum, minimum,
population std) take one pass and are shared by the metrics that read them (the scorer's adapters keep
them per image); CC, KL and SIM share one pass over the map and the density. The AUCs count values
≥ each threshold exactly by monotone binning (:func:`_counts_at_least`: O(N) arithmetic, a binary
search only among the few values that share a threshold's bin). ``benchmarks/fixation_metrics.py``
measures the eight against an explanation of the same image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "EPS",
    "auc_borji",
    "auc_judd",
    "cc",
    "fixation_pixels",
    "information_gain",
    "kl",
    "nss",
    "sauc",
    "sim",
    "to_density",
]

EPS = 2.2204e-16
"""The regularisation of KL and information gain: MATLAB's ``eps`` as MIT's code and pysaliency's
``MIT_KLDiv`` write it (2.2204e-16)."""

_BLOCK = 1 << 14  # blocks of 16,384 values (128 KB in float64): the passes over a map of any size stay in L2, no map-sized temporaries
_BINS = 4096  # the coarse bins of the AUCs' counts (see _counts_at_least): few values share a threshold's bin


def _array(values: Any, name: str) -> np.ndarray:
    """One [H, W] map as numpy: float32 kept as it is (sums are taken in float64, block by block;
    comparisons are exact in either precision), anything else as float64. A torch tensor is moved
    to the CPU first."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype != np.float32:
        array = array.astype(np.float64, copy=False)
    if array.ndim != 2:
        raise ValueError(f"{name} must be one [H, W] map; got shape {array.shape}")
    return array


class _Map:
    """One map, flat, with the statistics the metrics share computed once each (the scorer's adapters
    keep one per image for all eight metrics): its float64 sum, minimum, mean and population std."""

    def __init__(self, values: Any, name: str = "saliency", *, with_std: bool = True) -> None:
        self.with_std = with_std  # False: only the sum will be read (a baseline), one cheaper pass
        array = _array(values, name)
        self.shape = array.shape
        self.flat = array.reshape(-1)
        self._sum: float | None = None
        self._min: float | None = None
        self._std: float | None = None
        self.cache: dict[Any, Any] = {}  # results that pair this map with another (the adapters' density scores)

    def blocks(self):
        for start in range(0, self.flat.size, _BLOCK):
            yield self.flat[start : start + _BLOCK]

    def _moments(self) -> None:
        """Sum and population std in ONE float64 pass: Σ(v − c) and Σ(v − c)² about c, the mean of a
        strided sample, so that the variance Σ(v − c)²/N − (Σ(v − c)/N)² loses nothing to cancellation
        (c is within a fraction of a std of the mean)."""
        flat = self.flat
        c = float(flat[:: max(1, flat.size // 1024)].astype(np.float64).mean())
        total = square = 0.0
        if math.isfinite(c):
            for start in range(0, flat.size, _BLOCK):
                block = flat[start : start + _BLOCK].astype(np.float64)
                block -= c
                total += float(block.sum())
                square += float(block @ block)
        else:
            total = square = math.nan
        n = flat.size
        if self._sum is None:  # a sum taken on its own first stays (the metrics read one value)
            self._sum = total + c * n
        self._std = math.sqrt(max(0.0, square / n - (total / n) ** 2)) if math.isfinite(square) else math.nan

    @property
    def sum(self) -> float:
        if self._sum is None:
            if self.with_std:
                self._moments()  # the sum and the std in one pass
            else:
                self._sum = float(np.add.reduce(self.flat, dtype=np.float64))
        return self._sum

    @property
    def finite(self) -> bool:
        return math.isfinite(self.sum)  # NaN or ±inf anywhere makes the sum non-finite

    @property
    def mean(self) -> float:
        return self.sum / self.flat.size

    @property
    def std(self) -> float:
        """Population std (ddof 0)."""
        if self._std is None:
            self._moments()
        return self._std

    @property
    def shift_and_total(self) -> tuple[float, float]:
        """(shift, total): the map read as a density is (v − shift) / total — pysaliency's
        ``convert_saliency_map_to_density(minimum_value=0)``, shifted by the minimum only when that is
        negative. total 0 (a map summing to 0): the density is uniform."""
        if self._min is None:
            self._min = float(self.flat.min())
        shift = self._min if self._min < 0 else 0.0
        return shift, self.sum - shift * self.flat.size

    def density_at(self, values: np.ndarray) -> np.ndarray:
        """``values`` of this map (float64) read as its density."""
        shift, total = self.shift_and_total
        return (values - shift) / total if total else np.full(values.shape, 1.0 / self.flat.size)


def _as_map(values: Any, name: str = "saliency", *, with_std: bool = True) -> _Map:
    return values if isinstance(values, _Map) else _Map(values, name, with_std=with_std)


def _coordinates(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def fixation_pixels(xs: Any, ys: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The flat pixel index of each fixation in a map of ``shape`` (H, W): row floor(y), column
    floor(x), clipped to the image (a coordinate in (−1, 0) is pixel 0, one at the far edge the last
    pixel; fixations farther out are the dataset's to refuse). Duplicates are kept."""
    xs, ys = _coordinates(xs), _coordinates(ys)
    if xs.shape != ys.shape:
        raise ValueError(f"xs and ys must hold as many values; got {xs.size} and {ys.size}")
    height, width = int(shape[0]), int(shape[1])
    columns = np.clip(np.floor(xs), 0, width - 1).astype(np.int64)
    rows = np.clip(np.floor(ys), 0, height - 1).astype(np.int64)
    return rows * width + columns


def to_density(saliency: Any) -> np.ndarray:
    """A map read as a density (float64, sums to 1): pysaliency's ``convert_saliency_map_to_density``
    with ``minimum_value=0`` — shifted by its minimum only when that is negative, then divided by its
    sum; a map summing to 0 becomes uniform. (MIT's code divides by the sum without the shift, and
    leaves an all-zero map zero.)"""
    density = _as_map(saliency)
    return density.density_at(density.flat.astype(np.float64)).reshape(density.shape)


def nss(saliency: Any, xs: Any, ys: Any) -> float:
    """Normalised scanpath saliency: the map z-scored, averaged over the fixations.

    pysaliency's ``NSS`` averaged over the image's fixations: z = (s − mean) / std with the population
    std (ddof 0), every fixation counted (duplicates too). Differences from MIT's ``NSS.m``: MIT uses
    MATLAB's ``std`` (N − 1; values smaller by a factor sqrt((N − 1)/N), negligible at image sizes) and
    counts a pixel fixated twice once. NaN without fixations or for a constant map (pysaliency then
    skips the division and returns s − mean = 0; MIT divides by 0).
    """
    s = _as_map(saliency)
    pixels = fixation_pixels(xs, ys, s.shape)
    if pixels.size == 0 or not s.finite:
        return math.nan
    std = s.std
    if std == 0:
        return math.nan
    return float((s.flat[pixels].astype(np.float64).mean() - s.mean) / std)


def _auc_exact(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve of every threshold (pysaliency's ``general_roc`` with judd=0), exactly:
    the share of (positive, negative) pairs where the positive is higher, ties counting one half
    (the trapezoid over all thresholds is exactly that Mann–Whitney statistic). Each negative is
    placed among the distinct positive values by :func:`_counts_at_least` (O(M) arithmetic): no sort
    of the negatives."""
    if positives.size == 0 or negatives.size == 0:
        return math.nan
    values = np.unique(positives)
    # #negatives > v = #negatives ≥ the next float after v (exact in float64, where the values are compared)
    after = np.nextafter(values, np.inf)
    levels = np.unique(np.concatenate([values, after]))
    at_least = _counts_at_least(negatives, levels)
    at_least_v, above_v = at_least[np.searchsorted(levels, values)], at_least[np.searchsorted(levels, after)]
    below = negatives.size - at_least_v  # per distinct positive value: negatives below it, and tied with it
    tied = at_least_v - above_v
    multiplicity = np.bincount(np.searchsorted(values, positives), minlength=values.size)
    pairs = float(multiplicity @ below) + 0.5 * float(multiplicity @ tied)
    return pairs / (positives.size * negatives.size)


def _counts_at_least(flat: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many values of ``flat`` are ≥ each of the distinct ascending ``thresholds`` (float64,
    values of ``flat`` or exactly between them), exactly, as int64.

    Every value is put in one of ``_BINS`` equal bins over [thresholds[0], thresholds[-1]] by
    trunc(v · scale + offset), clipped, in ``flat``'s own precision — a monotone map of v (each step
    rounds monotonically), so a value in a higher bin than a threshold's is above it and one in a
    lower bin below it. Only the values sharing a bin with a threshold are compared with it
    (``searchsorted`` over those few): O(N) arithmetic instead of a binary search per pixel.
    """
    dtype = flat.dtype
    # each threshold rounded up to flat's precision: for every v of that precision, v ≥ θ ⇔ v ≥ rounded θ
    rounded = thresholds.astype(dtype)
    rounded = np.where(rounded.astype(np.float64) < thresholds, np.nextafter(rounded, dtype.type(np.inf)), rounded)
    lo, hi = float(rounded[0]), float(rounded[-1])
    with np.errstate(over="ignore", divide="ignore"):
        scale = dtype.type(_BINS / (hi - lo)) if hi > lo else dtype.type(0)
    if not (np.isfinite(scale) and np.isfinite(rounded).all()):  # a range too narrow (or wide) for the bins: compare directly
        ordered = np.sort(flat).astype(np.float64)
        return (flat.size - np.searchsorted(ordered, thresholds, side="left")).astype(np.int64)
    offset, top = dtype.type(1.0 - lo * float(scale)), dtype.type(_BINS + 1)

    def bin_of(values: np.ndarray) -> np.ndarray:
        """1 + trunc((v − lo) · scale) as v · scale + (1 − lo · scale), clipped to [0, _BINS + 1]:
        each step rounds monotonically, so the bins are in the order of the values (0: below lo)."""
        scaled = values * scale
        scaled += offset
        np.maximum(scaled, 0, out=scaled)
        np.minimum(scaled, top, out=scaled)
        return scaled.astype(np.int32)  # int32: a cheaper conversion than to intp; bincount and indexing take it

    threshold_bins = bin_of(rounded)
    is_threshold_bin = np.zeros(_BINS + 3, dtype=bool)
    is_threshold_bin[threshold_bins] = True
    counts = np.zeros(_BINS + 3, dtype=np.int64)
    shared = []
    for start in range(0, flat.size, _BLOCK):
        block = flat[start : start + _BLOCK]
        bins = bin_of(block)
        counts += np.bincount(bins, minlength=_BINS + 3)
        shared.append(block[is_threshold_bin[bins]])
    shared_values = np.sort(np.concatenate(shared))
    shared_counts = np.bincount(bin_of(shared_values.copy()), minlength=_BINS + 3)
    # ≥ θ  =  in a higher bin  +  in θ's bin and ≥ θ  (shared values ≥ θ minus the shared ones in higher bins)
    higher = np.cumsum(counts[::-1])[::-1][threshold_bins + 1]
    shared_higher = np.cumsum(shared_counts[::-1])[::-1][threshold_bins + 1]
    shared_at_least = shared_values.size - np.searchsorted(shared_values.astype(np.float64), thresholds, side="left")
    return (higher + shared_at_least - shared_higher).astype(np.int64)


def auc_judd(saliency: Any, xs: Any, ys: Any) -> float:
    """AUC-Judd: thresholds at the fixated values, negatives every pixel nobody fixated.

    pysaliency's ``AUC_Judd``: ``general_roc(positives, negatives, judd=1)`` with positives the map at
    every fixation (duplicates counted) and negatives the map at the unfixated pixels; the curve runs
    from (0, 0) through (fp(θ), tp(θ)) for each fixated value θ (tp, fp: share of positives /
    negatives ≥ θ) to (1, 1), integrated with the trapezoid rule.

    Ties are handled EXACTLY: no jitter. This equals pysaliency's ``AUC_Judd(jitter=False)``;
    pysaliency's default (and MIT's ``AUC_Judd.m``) adds uniform noise of 1e-7 first to break ties at
    random (pysaliency seeded with 42, MIT unseeded), which moves a map with flat regions (a
    thresholded CAM's zeros) by up to the width of the tied block on the curve. Other differences
    from MIT: MIT min-max normalises the map (no effect on an AUC), counts a pixel fixated twice once,
    and its negatives are all pixels minus the fixated ones counted by rank (``aboveth − i``), which
    equals the exact count only without ties. NaN without fixations or when every pixel is fixated.
    """
    s = _as_map(saliency)
    pixels = fixation_pixels(xs, ys, s.shape)
    if pixels.size == 0 or not s.finite:
        return math.nan
    flat = s.flat
    positives = flat[pixels].astype(np.float64)
    fixated = np.unique(pixels)
    n_negatives = flat.size - fixated.size
    if n_negatives == 0:
        return math.nan
    thresholds = np.unique(positives)  # ascending, distinct
    fixated_values = np.sort(flat[fixated].astype(np.float64))
    negatives_at_least = _counts_at_least(flat, thresholds) - (
        fixated_values.size - np.searchsorted(fixated_values, thresholds, side="left")
    )
    positives_at_least = positives.size - np.searchsorted(np.sort(positives), thresholds, side="left")
    # the curve from the highest threshold down: (0,0), one point per distinct fixated value, (1,1)
    # (pysaliency's repeated thresholds add zero-width steps only)
    tp = np.concatenate(([0.0], positives_at_least[::-1] / positives.size, [1.0]))
    fp = np.concatenate(([0.0], negatives_at_least[::-1] / n_negatives, [1.0]))
    return float(np.sum((fp[1:] - fp[:-1]) * (tp[1:] + tp[:-1])) * 0.5)


def auc_borji(saliency: Any, xs: Any, ys: Any, splits: int = 100, seed: int = 0) -> float:
    """AUC-Borji: negatives drawn uniformly from the image, ``splits`` times, seeded; the mean AUC.

    Each split draws as many pixels as there are fixations (uniformly, with replacement, as MIT's
    ``randi``) from ``numpy.random.default_rng(seed)`` — the same draws for every image of one size,
    so a score never depends on the order images are scored in — and takes the exact AUC of the
    fixated values against them (every threshold, ties counting one half: pysaliency's
    ``general_roc`` with judd=0). Its expectation is pysaliency's ``AUC(nonfixations='uniform')`` for
    the image. Differences from MIT's ``AUC_Borji.m`` (pysaliency has no AUC-Borji): MIT thresholds
    the min-max-normalised map at 0, 0.1, …, 1 only (a coarse staircase under the exact curve),
    counts a pixel fixated twice once, and draws from MATLAB's unseeded generator. NaN without
    fixations.
    """
    if splits < 1:
        raise ValueError(f"splits must be at least 1, got {splits}")
    s = _as_map(saliency)
    pixels = fixation_pixels(xs, ys, s.shape)
    if pixels.size == 0 or not s.finite:
        return math.nan
    positives = np.sort(s.flat[pixels].astype(np.float64))
    drawn = s.flat[np.random.default_rng(seed).integers(0, s.flat.size, size=(splits, pixels.size))].astype(np.float64)
    # per split: Σ over negatives of (#positives > n) + ½ (#positives = n)  =  Σ over pairs of (p > n) + ½ (p = n)
    up_to = np.searchsorted(positives, drawn, side="right")
    below = np.searchsorted(positives, drawn, side="left")
    per_split = ((positives.size - up_to).sum(axis=1) + 0.5 * (up_to - below).sum(axis=1)) / (positives.size * pixels.size)
    return float(per_split.mean())


def sauc(saliency: Any, xs: Any, ys: Any, other_xs: Any, other_ys: Any) -> float:
    """Shuffled AUC: negatives are the fixations of the dataset's other images, exact tie handling.

    pysaliency's ``AUC_per_image(nonfixations='shuffled')``: negatives = the map at every other
    image's fixations rescaled to this image's size (``other_xs``, ``other_ys``: x·w/w_j, y·h/h_j, the
    Tübingen benchmark's ``FullShuffledNonfixationProvider``; all of them, duplicates kept), AUC over
    every threshold with ties counting one half (``general_roc`` with judd=0; the mean of
    ``general_rocs_per_positive`` over the image's fixations is the same number). Differences from
    MIT's ``AUC_shuffled.m``: MIT samples as many other-image fixations as this image has, 100 times
    (unseeded), thresholds the min-max-normalised map at 0, 0.1, …, 1 only, and counts a pixel
    fixated twice once. NaN without fixations on this image or on any other.
    """
    s = _as_map(saliency)
    if not s.finite:
        return math.nan
    positives = s.flat[fixation_pixels(xs, ys, s.shape)].astype(np.float64)
    negatives = s.flat[fixation_pixels(other_xs, other_ys, s.shape)].astype(np.float64)
    return _auc_exact(positives, negatives)


def _density_scores(saliency: Any, density: Any, want: tuple[str, ...] = ("cc", "kl", "sim")) -> dict[str, float]:
    """CC, KL and SIM of a map and a density (what ``want`` names), in one pass over the two maps."""
    p, q = _as_map(saliency), _as_map(density, "density")
    if p.shape != q.shape:
        raise ValueError(f"the map and the density must have one shape; got {p.shape} and {q.shape}")
    if not (p.finite and q.finite):
        return dict.fromkeys(want, math.nan)
    cross = kl_sum = sim_sum = 0.0
    (shift_p, total_p), (shift_q, total_q) = p.shift_and_total, q.shift_and_total
    n = p.flat.size
    densities = "kl" in want or "sim" in want
    ratio = np.empty(min(n, _BLOCK))
    for start in range(0, n, _BLOCK):
        a = p.flat[start : start + _BLOCK].astype(np.float64)
        b = q.flat[start : start + _BLOCK].astype(np.float64)
        if "cc" in want:
            # Σ (a − ā)(b − b̄) = Σ (a − ā) b: the centred a sums to 0 (up to rounding, negligible against the covariance)
            cross += float((a - p.mean) @ b)
        if not densities:
            continue
        # the two maps read as densities, in place: (v − shift) / total, or uniform for a map summing to 0
        for values, shift, total in ((a, shift_p, total_p), (b, shift_q, total_q)):
            if total:
                if shift:
                    values -= shift
                values /= total
            else:
                values.fill(1.0 / n)
        if "kl" in want:
            buffer = ratio[: a.size]
            np.add(a, EPS, out=buffer)
            np.divide(b, buffer, out=buffer)
            buffer += EPS
            np.log(buffer, out=buffer)
            kl_sum += float(b @ buffer)
        if "sim" in want:
            sim_sum += float(np.minimum(a, b, out=a).sum())
    out = {}
    if "cc" in want:
        denominator = p.std * q.std * n
        out["cc"] = min(1.0, max(-1.0, cross / denominator)) if denominator > 0 and math.isfinite(denominator) else math.nan
    if "kl" in want:
        out["kl"] = kl_sum
    if "sim" in want:
        out["sim"] = sim_sum
    return out


def cc(saliency: Any, density: Any) -> float:
    """Pearson's correlation coefficient of the map and the fixation density (any reference map).

    pysaliency's ``CC`` (``np.corrcoef`` of the two z-scored maps) and MIT's ``CC.m`` (``corr2``) agree:
    the std's N vs N − 1 cancels in a correlation. NaN when either map is constant (pysaliency gives
    0 for a constant prediction; MIT divides by 0), or holds NaN/±inf.
    """
    return _density_scores(saliency, density, ("cc",))["cc"]


def kl(saliency: Any, density: Any) -> float:
    """KL(density ‖ prediction) in nats, with MIT's regularisation; lower is better.

    pysaliency's ``MIT_KLDiv``: both maps read as densities (:func:`to_density`), then
    Σ q · log(EPS + q / (p + EPS)) with q the density, p the prediction and EPS = 2.2204e-16. The
    same formula as MIT's ``KLdiv.m``, which differs only in reading a map as a density: MIT divides
    by the sum without shifting a negative map by its minimum, and leaves an all-zero map zero
    (pysaliency: uniform). NaN when a map holds NaN/±inf.
    """
    return _density_scores(saliency, density, ("kl",))["kl"]


def sim(saliency: Any, density: Any) -> float:
    """Similarity (histogram intersection): Σ min(p, q) of the two maps each read as a density.

    pysaliency's ``SIM`` (:func:`to_density`: shifted only when negative, divided by the sum).
    Difference from MIT's ``similarity.m``: MIT min-max normalises each map before dividing by its
    sum, so a map with a positive floor (e.g. a centre bias that never reaches 0) scores differently
    there. NaN when a map holds NaN/±inf.
    """
    return _density_scores(saliency, density, ("sim",))["sim"]


def information_gain(saliency: Any, baseline: Any, xs: Any, ys: Any) -> float:
    """Information gain over the baseline, in bits per fixation (higher is better).

    The map and the baseline (the dataset's centre bias) are read as densities (:func:`to_density`),
    and IG = mean over the image's fixations (duplicates counted) of log2(EPS + p(f)) − log2(EPS + b(f)).
    pysaliency's ``information_gain`` of a ``SaliencyMapNormalizingModel`` is the same without EPS
    (a zero of the map at a fixation gives −inf there; here log2(EPS) ≈ −52); pysaliency averages over
    all fixations of the dataset by default, here per image. Differences from MIT's ``InfoGain.m``:
    MIT min-max normalises both maps before dividing by their sums, and counts a pixel fixated twice
    once. The baseline scored against itself gives exactly 0. NaN without fixations.
    """
    p, b = _as_map(saliency), _as_map(baseline, "baseline", with_std=False)
    if p.shape != b.shape:
        raise ValueError(f"the map and the baseline must have one shape; got {p.shape} and {b.shape}")
    pixels = fixation_pixels(xs, ys, p.shape)
    if pixels.size == 0 or not (p.finite and b.finite):
        return math.nan
    p_at = p.density_at(p.flat[pixels].astype(np.float64))
    b_at = b.density_at(b.flat[pixels].astype(np.float64))
    return float(np.mean(np.log2(EPS + p_at) - np.log2(EPS + b_at)))


# --- The scorer's adapters: a batch of maps at the model's input size, scored at each stimulus's size ---


class _StimulusMaps:
    """The batch's maps upsampled to each image's stimulus size, once per batch for every metric:
    bilinear, align_corners=False (``torch.nn.functional.interpolate``), float32 as explained; with
    each map's statistics (and the density's, the baseline's) computed once for all eight metrics.
    Kept in the batch under ``_stimulus_maps``."""

    def __init__(self, maps: torch.Tensor, batch: dict[str, Any]) -> None:
        self.maps, self.batch = maps, batch
        self._float32: dict[int, torch.Tensor] = {}
        self._maps: dict[tuple[str, int], _Map] = {}

    def float32(self, i: int) -> torch.Tensor:
        if i not in self._float32:
            height, width = (int(v) for v in self.batch["stimulus_size"][i])
            source = self.maps[i : i + 1, None].detach().float()
            if tuple(source.shape[-2:]) != (height, width):
                source = torch.nn.functional.interpolate(source, size=(height, width), mode="bilinear", align_corners=False)
            self._float32[i] = source[0, 0].cpu()
        return self._float32[i]

    def map(self, i: int, key: str = "model") -> _Map:
        """Image ``i``'s upsampled map (``key`` "model"), or its ``density`` / ``baseline``."""
        if (key, i) not in self._maps:
            values = self.float32(i).numpy() if key == "model" else self.batch[key][i]
            self._maps[key, i] = _Map(values, key, with_std=key != "baseline")
        return self._maps[key, i]

    def density_scores(self, i: int) -> dict[str, float]:
        """CC, KL and SIM of image ``i``, computed together in one pass on the first call."""
        if ("density scores", i) not in self._maps:
            self._maps["density scores", i] = _density_scores(self.map(i), self.map(i, "density"))  # type: ignore[assignment]
        return self._maps["density scores", i]  # type: ignore[return-value]


def stimulus_maps(maps: torch.Tensor, batch: dict[str, Any]) -> _StimulusMaps:
    """The :class:`_StimulusMaps` of ``maps`` for ``batch`` (made on the first metric's call)."""
    cached = batch.get("_stimulus_maps")
    if cached is None or cached.maps is not maps:
        cached = _StimulusMaps(maps, batch)
        batch["_stimulus_maps"] = cached
    return cached


def _per_image(maps: torch.Tensor, batch: dict[str, Any], score_one) -> torch.Tensor:
    """float64 [B]: ``score_one(i, stimulus maps, fixations)`` for each image, NaN where it has no fixations."""
    upsampled = stimulus_maps(maps, batch)
    values = []
    for i, fixations in enumerate(batch["fixations"]):
        values.append(score_one(i, upsampled, np.asarray(fixations, dtype=np.float64).reshape(-1, 2)) if len(fixations) else math.nan)
    return torch.tensor(values, dtype=torch.float64)


def _fixation_metric(function):
    def compute(maps: torch.Tensor, batch: dict[str, Any], *, model: Any = None, explanation: Any = None) -> torch.Tensor:
        return _per_image(maps, batch, lambda i, up, f: function(up.map(i), f[:, 0], f[:, 1]))

    return compute


def _sauc_metric(maps: torch.Tensor, batch: dict[str, Any], *, model: Any = None, explanation: Any = None) -> torch.Tensor:
    def one(i: int, up: _StimulusMaps, f: np.ndarray) -> float:
        other = np.asarray(batch["other_fixations"][i], dtype=np.float64).reshape(-1, 2)
        return sauc(up.map(i), f[:, 0], f[:, 1], other[:, 0], other[:, 1])

    return _per_image(maps, batch, one)


def _ig_metric(maps: torch.Tensor, batch: dict[str, Any], *, model: Any = None, explanation: Any = None) -> torch.Tensor:
    return _per_image(maps, batch, lambda i, up, f: information_gain(up.map(i), up.map(i, "baseline"), f[:, 0], f[:, 1]))


def _density_metric(name: str):
    """CC, KL, SIM: against the fixation density at the stimulus size on a fixation dataset; on any
    other dataset against its reference map (folder heatmaps, ClickMe), both at the model input size."""

    def compute(maps: torch.Tensor, batch: dict[str, Any], *, model: Any = None, explanation: Any = None) -> torch.Tensor:
        if "density" in batch:
            return _per_image(maps, batch, lambda i, up, f: up.density_scores(i)[name])
        reference = batch["reference"]
        values = [_density_scores(maps[i], reference[i], (name,))[name] for i in range(maps.shape[0])]
        return torch.tensor(values, dtype=torch.float64)

    return compute


METRIC_FUNCTIONS = {
    "nss": _fixation_metric(nss),
    "auc-judd": _fixation_metric(auc_judd),
    "auc-borji": _fixation_metric(auc_borji),
    "sauc": _sauc_metric,
    "cc": _density_metric("cc"),
    "kl": _density_metric("kl"),
    "sim": _density_metric("sim"),
    "ig": _ig_metric,
}

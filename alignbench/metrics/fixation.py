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

Speed: everything is vectorised in numpy, float64; no metric sorts the map. AUC-Judd bins every pixel
among the fixated values with one ``searchsorted`` (O(N log F)); the other AUCs sort only the
negatives they sample (O(M log M)) and place the positives among them with ``searchsorted``.
``benchmarks/fixation_metrics.py`` measures the eight against an explanation of the same image.
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


def _map(saliency: Any, name: str = "saliency") -> np.ndarray:
    """One [H, W] map as float64 numpy (a torch tensor is moved to the CPU first)."""
    if hasattr(saliency, "detach"):
        saliency = saliency.detach().cpu().numpy()
    array = np.asarray(saliency, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be one [H, W] map; got shape {array.shape}")
    return array


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
    density = _map(saliency)
    low = density.min()
    if low < 0:
        density = density - low
    total = density.sum()
    if total:
        return density / total
    return np.full(density.shape, 1.0 / density.size)


def _finite(array: np.ndarray) -> bool:
    return bool(np.isfinite(array.sum()))  # one pass; NaN or ±inf anywhere makes the sum non-finite


def nss(saliency: Any, xs: Any, ys: Any) -> float:
    """Normalised scanpath saliency: the map z-scored, averaged over the fixations.

    pysaliency's ``NSS`` averaged over the image's fixations: z = (s − mean) / std with the population
    std (ddof 0), every fixation counted (duplicates too). Differences from MIT's ``NSS.m``: MIT uses
    MATLAB's ``std`` (N − 1; values smaller by a factor sqrt((N − 1)/N), negligible at image sizes) and
    counts a pixel fixated twice once. NaN without fixations or for a constant map (pysaliency then
    skips the division and returns s − mean = 0; MIT divides by 0).
    """
    s = _map(saliency)
    pixels = fixation_pixels(xs, ys, s.shape)
    if pixels.size == 0 or not _finite(s):
        return math.nan
    mean = s.mean()
    std = s.std()
    if std == 0:
        return math.nan
    return float((s.reshape(-1)[pixels].mean() - mean) / std)


def _auc_exact(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve of every threshold (pysaliency's ``general_roc`` with judd=0), exactly:
    the share of (positive, negative) pairs where the positive is higher, ties counting one half
    (the trapezoid over all thresholds is exactly that Mann–Whitney statistic)."""
    if positives.size == 0 or negatives.size == 0:
        return math.nan
    ordered = np.sort(negatives)
    below = np.searchsorted(ordered, positives, side="left").sum(dtype=np.float64)
    up_to = np.searchsorted(ordered, positives, side="right").sum(dtype=np.float64)
    return float((below + up_to) * 0.5 / (positives.size * negatives.size))


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
    s = _map(saliency)
    pixels = fixation_pixels(xs, ys, s.shape)
    flat = s.reshape(-1)
    if pixels.size == 0 or not _finite(s):
        return math.nan
    positives = flat[pixels]
    fixated = np.unique(pixels)
    n_negatives = flat.size - fixated.size
    if n_negatives == 0:
        return math.nan
    thresholds = np.unique(positives)  # ascending, distinct
    # how many pixels are ≥ each threshold: bin every pixel among the thresholds (bin k: ≥ thresholds[k-1], < thresholds[k])
    bins = np.bincount(np.searchsorted(thresholds, flat, side="right"), minlength=thresholds.size + 1)
    fixated_bins = np.bincount(np.searchsorted(thresholds, flat[fixated], side="right"), minlength=thresholds.size + 1)
    negatives_at_least = np.cumsum((bins - fixated_bins)[::-1])[::-1][1:]  # [k]: unfixated pixels ≥ thresholds[k]
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
    s = _map(saliency)
    pixels = fixation_pixels(xs, ys, s.shape)
    if pixels.size == 0 or not _finite(s):
        return math.nan
    flat = s.reshape(-1)
    positives = np.sort(flat[pixels])
    drawn = flat[np.random.default_rng(seed).integers(0, flat.size, size=(splits, pixels.size))]
    # per split: Σ over negatives of (#positives > n) + ½ (#positives = n)  =  Σ over pairs of (p > n) + ½ (p = n)
    above = positives.size - np.searchsorted(positives, drawn, side="right")
    tied = np.searchsorted(positives, drawn, side="right") - np.searchsorted(positives, drawn, side="left")
    per_split = (above.sum(axis=1) + 0.5 * tied.sum(axis=1)) / (positives.size * pixels.size)
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
    s = _map(saliency)
    if not _finite(s):
        return math.nan
    flat = s.reshape(-1)
    positives = flat[fixation_pixels(xs, ys, s.shape)]
    negatives = flat[fixation_pixels(other_xs, other_ys, s.shape)]
    return _auc_exact(positives, negatives)


def cc(saliency: Any, density: Any) -> float:
    """Pearson's correlation coefficient of the map and the fixation density (any reference map).

    pysaliency's ``CC`` (``np.corrcoef`` of the two z-scored maps) and MIT's ``CC.m`` (``corr2``) agree:
    the std's N vs N − 1 cancels in a correlation. NaN when either map is constant (pysaliency gives
    0 for a constant prediction; MIT divides by 0), or holds NaN/±inf.
    """
    a, b = _map(saliency), _map(density, "density")
    if a.shape != b.shape:
        raise ValueError(f"the map and the density must have one shape; got {a.shape} and {b.shape}")
    a = a - a.mean()
    b = b - b.mean()
    a_flat, b_flat = a.reshape(-1), b.reshape(-1)
    denominator = math.sqrt(float(a_flat @ a_flat) * float(b_flat @ b_flat))
    if denominator == 0 or not math.isfinite(denominator):
        return math.nan
    return float(min(1.0, max(-1.0, float(a_flat @ b_flat) / denominator)))


def kl(saliency: Any, density: Any) -> float:
    """KL(density ‖ prediction) in nats, with MIT's regularisation; lower is better.

    pysaliency's ``MIT_KLDiv``: both maps read as densities (:func:`to_density`), then
    Σ q · log(EPS + q / (p + EPS)) with q the density, p the prediction and EPS = 2.2204e-16. The
    same formula as MIT's ``KLdiv.m``, which differs only in reading a map as a density: MIT divides
    by the sum without shifting a negative map by its minimum, and leaves an all-zero map zero
    (pysaliency: uniform). NaN when a map holds NaN/±inf.
    """
    p, q = _map(saliency), _map(density, "density")
    if p.shape != q.shape:
        raise ValueError(f"the map and the density must have one shape; got {p.shape} and {q.shape}")
    if not (_finite(p) and _finite(q)):
        return math.nan
    p, q = to_density(p), to_density(q)
    return float(np.sum(q * np.log(EPS + q / (p + EPS))))


def sim(saliency: Any, density: Any) -> float:
    """Similarity (histogram intersection): Σ min(p, q) of the two maps each read as a density.

    pysaliency's ``SIM`` (:func:`to_density`: shifted only when negative, divided by the sum).
    Difference from MIT's ``similarity.m``: MIT min-max normalises each map before dividing by its
    sum, so a map with a positive floor (e.g. a centre bias that never reaches 0) scores differently
    there. NaN when a map holds NaN/±inf.
    """
    p, q = _map(saliency), _map(density, "density")
    if p.shape != q.shape:
        raise ValueError(f"the map and the density must have one shape; got {p.shape} and {q.shape}")
    if not (_finite(p) and _finite(q)):
        return math.nan
    return float(np.minimum(to_density(p), to_density(q)).sum())


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
    p, b = _map(saliency), _map(baseline, "baseline")
    if p.shape != b.shape:
        raise ValueError(f"the map and the baseline must have one shape; got {p.shape} and {b.shape}")
    pixels = fixation_pixels(xs, ys, p.shape)
    if pixels.size == 0 or not (_finite(p) and _finite(b)):
        return math.nan
    p_at, b_at = to_density(p).reshape(-1)[pixels], to_density(b).reshape(-1)[pixels]
    return float(np.mean(np.log2(EPS + p_at) - np.log2(EPS + b_at)))


# --- The scorer's adapters: a batch of maps at the model's input size, scored at each stimulus's size ---


class _StimulusMaps:
    """The batch's maps upsampled to each image's stimulus size, once per batch for every metric:
    bilinear, align_corners=False (``torch.nn.functional.interpolate``), float32 as explained, and
    float64 numpy for the metrics. Kept in the batch under ``_stimulus_maps``."""

    def __init__(self, maps: torch.Tensor, sizes: list) -> None:
        self.maps, self.sizes = maps, sizes
        self._float32: dict[int, torch.Tensor] = {}
        self._float64: dict[int, np.ndarray] = {}

    def float32(self, i: int) -> torch.Tensor:
        if i not in self._float32:
            height, width = (int(v) for v in self.sizes[i])
            source = self.maps[i : i + 1, None].float()
            if tuple(source.shape[-2:]) == (height, width):
                self._float32[i] = source[0, 0].cpu()
            else:
                upsampled = torch.nn.functional.interpolate(source, size=(height, width), mode="bilinear", align_corners=False)
                self._float32[i] = upsampled[0, 0].cpu()
        return self._float32[i]

    def float64(self, i: int) -> np.ndarray:
        if i not in self._float64:
            self._float64[i] = self.float32(i).numpy().astype(np.float64)
        return self._float64[i]


def stimulus_maps(maps: torch.Tensor, batch: dict[str, Any]) -> _StimulusMaps:
    """The :class:`_StimulusMaps` of ``maps`` for ``batch`` (made on the first metric's call)."""
    cached = batch.get("_stimulus_maps")
    if cached is None or cached.maps is not maps:
        cached = _StimulusMaps(maps, batch["stimulus_size"])
        batch["_stimulus_maps"] = cached
    return cached


def _per_image(maps: torch.Tensor, batch: dict[str, Any], score_one) -> torch.Tensor:
    """float64 [B]: ``score_one(i, stimulus maps)`` for each image, NaN where it has no fixations."""
    upsampled = stimulus_maps(maps, batch)
    values = []
    for i, fixations in enumerate(batch["fixations"]):
        values.append(score_one(i, upsampled, np.asarray(fixations, dtype=np.float64).reshape(-1, 2)) if len(fixations) else math.nan)
    return torch.tensor(values, dtype=torch.float64)


def _fixation_metric(function):
    def compute(maps: torch.Tensor, batch: dict[str, Any], *, model: Any = None, explanation: Any = None) -> torch.Tensor:
        return _per_image(maps, batch, lambda i, up, f: function(up.float64(i), f[:, 0], f[:, 1]))

    return compute


def _sauc_metric(maps: torch.Tensor, batch: dict[str, Any], *, model: Any = None, explanation: Any = None) -> torch.Tensor:
    def one(i: int, up: _StimulusMaps, f: np.ndarray) -> float:
        other = np.asarray(batch["other_fixations"][i], dtype=np.float64).reshape(-1, 2)
        return sauc(up.float64(i), f[:, 0], f[:, 1], other[:, 0], other[:, 1])

    return _per_image(maps, batch, one)


def _ig_metric(maps: torch.Tensor, batch: dict[str, Any], *, model: Any = None, explanation: Any = None) -> torch.Tensor:
    return _per_image(maps, batch, lambda i, up, f: information_gain(up.float64(i), batch["baseline"][i], f[:, 0], f[:, 1]))


def _density_metric(function):
    """CC, KL, SIM: against the fixation density at the stimulus size on a fixation dataset; on any
    other dataset against its reference map (folder heatmaps, ClickMe), both at the model input size."""

    def compute(maps: torch.Tensor, batch: dict[str, Any], *, model: Any = None, explanation: Any = None) -> torch.Tensor:
        if "density" in batch:
            return _per_image(maps, batch, lambda i, up, f: function(up.float64(i), batch["density"][i]))
        reference = batch["reference"]
        values = [function(maps[i], reference[i]) for i in range(maps.shape[0])]
        return torch.tensor(values, dtype=torch.float64)

    return compute


METRIC_FUNCTIONS = {
    "nss": _fixation_metric(nss),
    "auc-judd": _fixation_metric(auc_judd),
    "auc-borji": _fixation_metric(auc_borji),
    "sauc": _sauc_metric,
    "cc": _density_metric(cc),
    "kl": _density_metric(kl),
    "sim": _density_metric(sim),
    "ig": _ig_metric,
}

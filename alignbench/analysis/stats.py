"""Paired statistics for DCLS-vs-baseline comparisons: bootstrap CI, Wilcoxon signed-rank, correlations.

Plain numpy on purpose. ``compare`` and ``report`` must answer in well under two seconds, and
importing ``scipy.stats`` alone takes about a second here; so the tests check each function against
scipy on known inputs instead of calling scipy at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0

# Bootstrap resamples are drawn image by image while n × resamples stays within this many draws
# (cheap; n ≤ 2000 at 2000 resamples); above it, the stratified draw of _bootstrap_means.
_EXACT_DRAWS = 4_000_000
_STRATA = 64
_CHUNK_DRAWS = 2_000_000  # index draws held in memory at once (16 MB of int64)

# scipy.stats.wilcoxon's method="auto": the exact null distribution up to 50 pairs without ties
# or zeros; with ties or zeros, an exhaustive sign-flip permutation test up to 13 pairs (2**13 sign
# patterns, fewer than its 9999 resamples); otherwise the normal approximation.
_WILCOXON_EXACT_MAX_N = 50
_WILCOXON_PERMUTATION_MAX_N = 13


def average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks with ties sharing their mean rank (= ``scipy.stats.rankdata``), and the tie-group sizes."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = values.size
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.empty(n, dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    first = np.flatnonzero(starts)
    sizes = np.diff(np.append(first, n))
    group_rank = first + (sizes + 1) / 2.0  # ranks first+1 .. first+size, averaged
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, sizes)
    return ranks, sizes


@dataclass(frozen=True)
class WilcoxonResult:
    statistic: float  # min(W+, W-), as scipy reports it for the two-sided test
    p_value: float
    n_nonzero: int  # pairs left after dropping zero differences (zero_method="wilcox")
    method: str  # exact | permutation | asymptotic


def _wilcoxon_null_counts(n: int) -> np.ndarray:
    """How many of the 2**n sign patterns give W+ = k, for k = 0 .. n(n+1)/2 (subset sums of 1..n)."""
    counts = np.zeros(n * (n + 1) // 2 + 1, dtype=np.float64)  # ≤ 2**50: exact in float64
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts


def wilcoxon_signed_rank(x: np.ndarray, y: np.ndarray | None = None) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of the differences ``y - x`` (or of ``x`` alone).

    The same answer as ``scipy.stats.wilcoxon(y - x)`` with its defaults: zero differences dropped
    (zero_method="wilcox"), continuity correction off, method="auto".
    """
    d = np.asarray(x, dtype=np.float64) if y is None else np.asarray(y, dtype=np.float64) - np.asarray(x, dtype=np.float64)
    d = d.ravel()
    n_total = d.size
    nonzero = d[d != 0]
    n = nonzero.size
    if n == 0:
        return WilcoxonResult(math.nan, math.nan, 0, "none")
    ranks, tie_sizes = average_ranks(np.abs(nonzero))
    r_plus = float(ranks[nonzero > 0].sum())
    r_minus = float(ranks[nonzero < 0].sum())
    statistic = min(r_plus, r_minus)
    has_ties = bool((tie_sizes > 1).any())

    if n_total <= _WILCOXON_EXACT_MAX_N and not has_ties and n == n_total:
        counts = _wilcoxon_null_counts(n)
        total = 2.0**n
        # scipy rounds a non-integral statistic outwards (gh-19872); W+ is an integer here anyway
        upper = counts[int(math.floor(r_plus)) :].sum() / total
        lower = counts[: int(math.ceil(r_plus)) + 1].sum() / total
        return WilcoxonResult(statistic, float(min(1.0, 2.0 * min(upper, lower))), n, "exact")

    if n_total <= _WILCOXON_PERMUTATION_MAX_N:
        # every sign pattern of the non-zero differences (zeros do not change W+)
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
        null = (patterns * ranks).sum(axis=1)
        gamma = abs(np.finfo(np.float64).eps * 100 * r_plus)  # scipy's tolerance for equal statistics
        p_less = np.count_nonzero(null <= r_plus + gamma) / null.size
        p_greater = np.count_nonzero(null >= r_plus - gamma) / null.size
        return WilcoxonResult(statistic, float(min(1.0, 2.0 * min(p_less, p_greater))), n, "permutation")

    mean = n * (n + 1) / 4.0
    tie_term = float(np.sum(tie_sizes.astype(np.float64) ** 3 - tie_sizes))
    se = math.sqrt((n * (n + 1) * (2 * n + 1) - tie_term / 2.0) / 24.0)
    z = (r_plus - mean) / se
    p = math.erfc(abs(z) / math.sqrt(2.0))  # = 2 * P(Z > |z|)
    return WilcoxonResult(statistic, float(min(1.0, p)), n, "asymptotic")


def _bootstrap_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement, size n) of ``d``."""
    n = d.size
    if n * n_resamples <= _EXACT_DRAWS:
        chunk = max(1, _CHUNK_DRAWS // n)
        means = np.empty(n_resamples, dtype=np.float64)
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
        return means
    # Large n: drawing n indices per resample would dominate a comparison at 52,000 images. Sort d
    # into equal-size strata; how many of the n draws fall in each stratum is exactly multinomial
    # (drawn per resample in O(strata)); the sum of the c draws that land in a stratum is replaced by
    # its normal law (mean c·μ, variance c·σ², exact in both), and those sums add up to one normal.
    # The bootstrap distribution keeps its exact mean and variance and the skew between strata; what
    # is lost is the within-stratum skew of sums of hundreds of draws, negligible next to the
    # Monte-Carlo error of 2000 resamples (tests/analysis/test_stats.py compares both ways).
    strata = np.array_split(np.sort(d), _STRATA)
    sizes = np.array([s.size for s in strata], dtype=np.float64)
    centre = np.array([s.mean() for s in strata])
    spread = np.array([s.var() for s in strata])
    counts = rng.multinomial(n, sizes / n, size=n_resamples).astype(np.float64)
    sums = counts @ centre + np.sqrt(counts @ spread) * rng.standard_normal(n_resamples)
    return sums / n


def paired_bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of mean(y - x), resampling the (x, y) pairs together.

    Seeded: the same inputs give the same interval. NaN bounds for fewer than two pairs.
    """
    d = np.asarray(y, dtype=np.float64).ravel() - np.asarray(x, dtype=np.float64).ravel()
    if d.size < 2:
        return math.nan, math.nan
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError("n_resamples must be positive and confidence in (0, 1)")
    means = _bootstrap_means(d, n_resamples, np.random.default_rng(seed))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r (= ``scipy.stats.pearsonr(x, y).statistic``); NaN for < 2 points or a constant input."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size < 2 or x.size != y.size:
        return math.nan
    dx = x - x.mean()
    dy = y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0:
        return math.nan
    return float(np.clip((dx @ dy) / denominator, -1.0, 1.0))


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ: Pearson's r of the average ranks (= ``scipy.stats.spearmanr(x, y).statistic``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size < 2 or x.size != y.size:
        return math.nan
    return pearson_r(average_ranks(x)[0], average_ranks(y)[0])

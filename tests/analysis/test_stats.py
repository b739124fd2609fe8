"""The paired statistics of compare/report against scipy on known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from alignbench.analysis import stats as S


def _pairs(n: int, seed: int, *, decimals: int | None = None, zeros: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 0.2, n)
    y = x + rng.normal(0.05, 0.1, n)
    if decimals is not None:  # ties in |y - x|
        x, y = np.round(x, decimals), np.round(y, decimals)
    y[:zeros] = x[:zeros]  # zero differences
    return x, y


def test_average_ranks_equal_scipy_rankdata() -> None:
    values = np.array([3.0, 1.0, 2.0, 3.0, 3.0, -1.0, 2.0, 0.5])
    ranks, sizes = S.average_ranks(values)
    np.testing.assert_array_equal(ranks, stats.rankdata(values))
    assert sorted(sizes.tolist()) == [1, 1, 1, 2, 3]


@pytest.mark.parametrize(
    ("n", "decimals", "zeros", "method"),
    [
        (20, None, 0, "exact"),  # ≤ 50 pairs, no ties, no zeros: exact null distribution
        (50, None, 0, "exact"),
        (10, 2, 0, "permutation"),  # ties, ≤ 13 pairs: every sign pattern
        (12, None, 2, "permutation"),  # zeros, ≤ 13 pairs
        (30, 2, 0, "asymptotic"),  # ties, 14..50 pairs: normal approximation with tie correction
        (40, None, 3, "asymptotic"),
        (51, None, 0, "asymptotic"),  # > 50 pairs
        (2000, 3, 5, "asymptotic"),
    ],
)
def test_wilcoxon_equals_scipy(n: int, decimals: int | None, zeros: int, method: str) -> None:
    x, y = _pairs(n, seed=n, decimals=decimals, zeros=zeros)
    ours = S.wilcoxon_signed_rank(x, y)
    reference = stats.wilcoxon(y - x)  # scipy's defaults: zero_method="wilcox", method="auto"
    assert ours.method == method
    assert ours.statistic == pytest.approx(float(reference.statistic), abs=1e-9)  # float64 rounding of n-term sums (n: the sample size)
    # float64: the p-value's series/normal approximation, rounded over n terms
    assert ours.p_value == pytest.approx(float(reference.pvalue), rel=1e-9, abs=1e-15)
    assert ours.n_nonzero == np.count_nonzero(y - x)


def test_wilcoxon_one_sample_and_sign_symmetry() -> None:
    x, y = _pairs(25, seed=3)
    # float64: the p-value's series/normal approximation, rounded over n terms
    assert S.wilcoxon_signed_rank(y - x).p_value == pytest.approx(stats.wilcoxon(y - x).pvalue, rel=1e-12)
    assert S.wilcoxon_signed_rank(x, y).p_value == pytest.approx(S.wilcoxon_signed_rank(y, x).p_value, rel=1e-12)


def test_wilcoxon_without_nonzero_differences_is_nan() -> None:
    result = S.wilcoxon_signed_rank(np.ones(5), np.ones(5))
    assert math.isnan(result.p_value) and result.n_nonzero == 0


def test_bootstrap_is_seeded_and_matches_scipy_percentile_interval() -> None:
    x, y = _pairs(200, seed=7)
    low, high = S.paired_bootstrap_ci(x, y, n_resamples=4000, seed=1)
    assert (low, high) == S.paired_bootstrap_ci(x, y, n_resamples=4000, seed=1)  # deterministic
    assert low < (y - x).mean() < high
    reference = stats.bootstrap(
        (x, y),
        lambda a, b, axis: np.mean(b - a, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=20000,
        random_state=0,
    ).confidence_interval
    standard_error = (y - x).std() / math.sqrt(x.size)
    # Monte-Carlo error of a 2.5 % percentile over a few thousand resamples: a few hundredths of an SE
    assert low == pytest.approx(reference.low, abs=0.15 * standard_error)
    assert high == pytest.approx(reference.high, abs=0.15 * standard_error)


@pytest.mark.parametrize("n", [2_500, 12_000])
def test_stratified_bootstrap_of_large_samples_agrees_with_drawing_every_index(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(0.3, 0.2, n)
    y = np.clip(x + rng.gamma(2.0, 0.05, x.size) - 0.08, -1, 1)  # skewed differences
    standard_error = (y - x).std() / math.sqrt(x.size)
    assert n * S.DEFAULT_RESAMPLES > S._EXACT_DRAWS  # the default takes the stratified draw
    # many resamples on both sides, so that Monte-Carlo noise (≈ 0.06 SE per endpoint at 2000
    # resamples) does not hide a difference between the two ways of drawing
    stratified = S.paired_bootstrap_ci(x, y, n_resamples=40_000)
    monkeypatch.setattr(S, "_EXACT_DRAWS", 10**12)
    exact = S.paired_bootstrap_ci(x, y, n_resamples=4_000)
    for ours, theirs in zip(stratified, exact):
        assert ours == pytest.approx(theirs, abs=0.15 * standard_error)
    normal = ((y - x).mean() - 1.959964 * standard_error, (y - x).mean() + 1.959964 * standard_error)
    for ours, theory in zip(stratified, normal):
        assert ours == pytest.approx(theory, abs=0.1 * standard_error)


def test_bootstrap_with_fewer_than_two_pairs_is_nan() -> None:
    assert all(math.isnan(v) for v in S.paired_bootstrap_ci(np.array([0.1]), np.array([0.2])))


def test_correlations_equal_scipy() -> None:
    rng = np.random.default_rng(5)
    params = np.array([25.6, 28.6, 50.2, 88.6, 26.3, 26.8, 21.6, 31.5])
    scores = 0.4 + 0.001 * params + rng.normal(0, 0.02, params.size)
    # float64 rounding of n-term sums (n: the sample size)
    assert S.pearson_r(params, scores) == pytest.approx(stats.pearsonr(params, scores).statistic, rel=1e-12)
    assert S.spearman_rho(params, scores) == pytest.approx(stats.spearmanr(params, scores).statistic, rel=1e-12)
    tied = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    other = np.array([2.0, 1.0, 4.0, 4.0, 3.0])
    assert S.spearman_rho(tied, other) == pytest.approx(stats.spearmanr(tied, other).statistic, rel=1e-12)
    assert math.isnan(S.pearson_r(np.ones(4), scores[:4]))

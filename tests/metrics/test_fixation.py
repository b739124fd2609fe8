"""The saliency benchmark's metrics (alignbench.metrics.fixation): known answers, and each equal to a
direct transcription of pysaliency's code (pysaliency/metrics.py, roc_cython.pyx general_roc,
saliency_map_models.py) on small random maps with random fixations, ties and duplicates included.

Tolerances: the library and the transcriptions compute in float64 on maps of ≤ 40×30 pixels, summing
≤ 1200 terms of magnitude ≤ 1 in different orders; the rounding is below 1200 · 2⁻⁵² ≈ 3e-13 of the
result's scale, so 1e-11 (absolute, on results of order 1) leaves a margin. AUCs are ratios of integer
counts, computed exactly on both sides up to the last division and the trapezoid sum.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignbench.metrics import fixation as F

TOL = 1e-11


# ---- transcriptions of pysaliency (numpy only; the Cython loops written as Python loops) ----


def py_convert_saliency_map_to_density(saliency_map, minimum_value=0.0):
    if saliency_map.min() < 0:
        saliency_map = saliency_map - saliency_map.min()
    saliency_map = saliency_map + minimum_value
    saliency_map_sum = saliency_map.sum()
    if saliency_map_sum:
        saliency_map = saliency_map / saliency_map_sum
    else:
        saliency_map[:] = 1.0
        saliency_map /= saliency_map.sum()
    return saliency_map


def py_NSS(saliency_map, xs, ys):
    xs = np.asarray(xs, dtype=int)
    ys = np.asarray(ys, dtype=int)
    saliency_map = np.asarray(saliency_map, dtype=float)
    mean = saliency_map.mean()
    std = saliency_map.std()
    value = saliency_map[ys, xs].copy()
    value -= mean
    if std:
        value /= std
    return value


def py_CC(saliency_map_1, saliency_map_2):
    def normalize(saliency_map):
        saliency_map = np.asarray(saliency_map, dtype=float)
        saliency_map -= saliency_map.mean()
        std = saliency_map.std()
        if std:
            saliency_map /= std
        return saliency_map, std == 0

    smap1, constant1 = normalize(saliency_map_1.copy())
    smap2, constant2 = normalize(saliency_map_2.copy())
    if constant1 and not constant2:
        return 0.0
    return np.corrcoef(smap1.flatten(), smap2.flatten())[0, 1]


def py_MIT_KLDiv(saliency_map_1, saliency_map_2):
    with np.errstate(divide="ignore"):  # pysaliency takes log(0) of a density's zeros and exp()s it back
        log_density_1 = np.log(py_convert_saliency_map_to_density(saliency_map_1, minimum_value=0))
        log_density_2 = np.log(py_convert_saliency_map_to_density(saliency_map_2, minimum_value=0))
    log_regularization = quotient_regularization = 2.2204e-16
    return (
        np.exp(log_density_2) * np.log(log_regularization + np.exp(log_density_2) / (np.exp(log_density_1) + quotient_regularization))
    ).sum()


def py_SIM(saliency_map_1, saliency_map_2):
    density_1 = py_convert_saliency_map_to_density(saliency_map_1, minimum_value=0)
    density_2 = py_convert_saliency_map_to_density(saliency_map_2, minimum_value=0)
    return np.min([density_1, density_2], axis=0).sum()


def py_general_roc(positives, negatives, judd=0):
    """roc_cython.pyx general_roc, line by line."""
    sorted_positives = np.sort(positives)[::-1]
    sorted_negatives = np.sort(negatives)[::-1]
    if judd == 0:
        all_values = np.hstack([positives, negatives])
        all_values = np.sort(all_values)[::-1]
    else:
        min_val = np.min([sorted_positives[len(positives) - 1], sorted_negatives[len(negatives) - 1]])
        max_val = np.max([sorted_positives[0], sorted_negatives[0]]) + 1
        all_values = np.hstack((max_val, positives, min_val))
        all_values = np.sort(all_values)[::-1]
    false_positive_rates = np.zeros(len(all_values) + 1)
    hit_rates = np.zeros(len(all_values) + 1)
    true_positive_count = 0
    false_positive_count = 0
    positive_count = len(positives)
    negative_count = len(negatives)
    for i in range(len(all_values)):
        theta = all_values[i]
        while true_positive_count < positive_count and sorted_positives[true_positive_count] >= theta:
            true_positive_count += 1
        while false_positive_count < negative_count and sorted_negatives[false_positive_count] >= theta:
            false_positive_count += 1
        false_positive_rates[i + 1] = float(false_positive_count) / negative_count
        hit_rates[i + 1] = float(true_positive_count) / positive_count
    return np.trapezoid(hit_rates, false_positive_rates)


def py_unfixated_values(saliency_map, ys, xs):
    """_get_unfixated_values: every pixel not fixated at least once."""
    fixation_map = np.zeros(saliency_map.shape)
    fixation_map[ys, xs] += 1
    return saliency_map[fixation_map == 0].flatten()


def py_AUC_Judd_no_jitter(saliency_map, x_int, y_int):
    positives = np.asarray(saliency_map[y_int, x_int]).astype(float)
    negatives = py_unfixated_values(saliency_map, y_int, x_int).astype(float)
    return py_general_roc(positives, negatives, judd=1)


def py_shuffled_negatives(xs_other, ys_other, sizes_other, size):
    """FullShuffledNonfixationProvider._nonfixations_for_image: rescaled, then astype(int)."""
    xs = xs_other.astype(float) * size[1] / sizes_other[:, 1]
    ys = ys_other.astype(float) * size[0] / sizes_other[:, 0]
    return xs.astype(int), ys.astype(int)


def py_information_gain(saliency_map, baseline, x_int, y_int):
    """models.py information_gains of two SaliencyMapNormalizingModel(minimum_value=0), one image."""
    log_p = np.log(py_convert_saliency_map_to_density(saliency_map.copy(), 0.0))
    log_b = np.log(py_convert_saliency_map_to_density(baseline.copy(), 0.0))
    return ((log_p[y_int, x_int] - log_b[y_int, x_int]) / np.log(2)).mean()


# ---- random cases ----


def case(seed: int, *, levels: int | None = None, shape=(30, 40), n_fix=25):
    """A random map (quantised to ``levels`` values when given: ties), fixations with duplicates and
    coordinates in (−1, 0) (pixel 0), their pysaliency integer pixels."""
    rng = np.random.default_rng(seed)
    h, w = shape
    smap = rng.random(shape)
    if levels:
        smap = np.floor(smap * levels) / levels
    xs = rng.uniform(-0.99, w - 0.01, n_fix)
    ys = rng.uniform(-0.99, h - 0.01, n_fix)
    xs[:3], ys[:3] = xs[3], ys[3]  # duplicates: one pixel fixated four times
    return smap, xs, ys, xs.astype(int), ys.astype(int)


CASES = [(seed, levels) for seed in range(6) for levels in (None, 4)]


@pytest.mark.parametrize(("seed", "levels"), CASES)
def test_nss_equals_pysaliency(seed, levels):
    smap, xs, ys, xi, yi = case(seed, levels=levels)
    assert F.nss(smap, xs, ys) == pytest.approx(py_NSS(smap, xi, yi).mean(), abs=TOL)


@pytest.mark.parametrize(("seed", "levels"), CASES)
def test_auc_judd_equals_pysaliency_without_jitter(seed, levels):
    smap, xs, ys, xi, yi = case(seed, levels=levels)
    assert F.auc_judd(smap, xs, ys) == pytest.approx(py_AUC_Judd_no_jitter(smap, xi, yi), abs=TOL)


@pytest.mark.parametrize(("seed", "levels"), CASES)
def test_sauc_equals_pysaliency_shuffled(seed, levels):
    smap, xs, ys, xi, yi = case(seed, levels=levels)
    rng = np.random.default_rng(100 + seed)
    sizes_other = rng.integers(10, 60, size=(200, 2)).astype(float)  # (h, w) of the image each fixation is on
    xs_o, ys_o = rng.random(200) * sizes_other[:, 1], rng.random(200) * sizes_other[:, 0]
    nx, ny = py_shuffled_negatives(xs_o, ys_o, sizes_other, smap.shape)
    expected = py_general_roc(smap[yi, xi], smap[ny, nx], judd=0)
    other_x, other_y = xs_o * smap.shape[1] / sizes_other[:, 1], ys_o * smap.shape[0] / sizes_other[:, 0]  # the contract's rescaling
    assert F.sauc(smap, xs, ys, other_x, other_y) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize(("seed", "levels"), CASES)
def test_auc_borji_is_the_mean_exact_auc_of_its_seeded_uniform_splits(seed, levels):
    smap, xs, ys, xi, yi = case(seed, levels=levels)
    positives = smap[yi, xi]
    draws = np.random.default_rng(7).integers(0, smap.size, size=(5, len(xs)))
    expected = np.mean([py_general_roc(positives, smap.reshape(-1)[d], judd=0) for d in draws])
    assert F.auc_borji(smap, xs, ys, splits=5, seed=7) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize(("seed", "levels"), CASES)
def test_density_metrics_equal_pysaliency(seed, levels):
    smap, *_ = case(seed, levels=levels)
    density = np.random.default_rng(50 + seed).random(smap.shape) ** 3
    assert F.cc(smap, density) == pytest.approx(py_CC(smap, density), abs=TOL)
    assert F.kl(smap, density) == pytest.approx(py_MIT_KLDiv(smap, density), abs=TOL)
    assert F.sim(smap, density) == pytest.approx(py_SIM(smap, density), abs=TOL)
    shifted = smap - 0.5  # a negative map: pysaliency shifts it by its minimum
    assert F.kl(shifted, density) == pytest.approx(py_MIT_KLDiv(shifted, density), abs=TOL)
    assert F.sim(shifted, density) == pytest.approx(py_SIM(shifted, density), abs=TOL)


@pytest.mark.parametrize("seed", range(6))
def test_information_gain_equals_pysaliency_on_positive_maps(seed):
    # pysaliency has no eps: on maps whose densities are ≥ 1e-4 the eps moves each log2 term by at
    # most eps / 1e-4 / ln 2 < 4e-12.
    smap, xs, ys, xi, yi = case(seed)
    rng = np.random.default_rng(80 + seed)
    smap = smap + 0.1
    baseline = rng.random(smap.shape) + 0.1
    assert F.information_gain(smap, baseline, xs, ys) == pytest.approx(py_information_gain(smap, baseline, xi, yi), abs=1e-10)


# ---- known answers ----


def test_a_map_equal_to_the_density_scores_perfectly():
    density = np.random.default_rng(0).random((20, 30)) ** 4
    density /= density.sum()
    assert F.cc(density, density) == pytest.approx(1.0, abs=1e-15)
    # Σ q log(eps + q/(q + eps)) = Σ q · O(eps / q) ≈ −N·eps: zero to 600 · 2.2e-16
    assert F.kl(density, density) == pytest.approx(0.0, abs=1e-12)
    assert F.sim(density, density) == pytest.approx(1.0, abs=1e-13)


def test_a_map_peaking_on_every_fixation_has_auc_1_and_reversed_its_minimum():
    rng = np.random.default_rng(1)
    pixels = rng.choice(600, size=12, replace=False)  # 12 distinct pixels of a 20×30 map
    xs, ys = pixels % 30 + rng.random(12), pixels // 30 + rng.random(12)
    peaks = np.zeros((20, 30))
    peaks[ys.astype(int), xs.astype(int)] = 1.0 + np.arange(12)  # distinct peaks
    other_x, other_y = rng.uniform(0, 30, 100), rng.uniform(0, 20, 100)
    free = peaks[other_y.astype(int), other_x.astype(int)] == 0
    other_x, other_y = other_x[free], other_y[free]
    assert F.auc_judd(peaks, xs, ys) == 1.0
    assert F.sauc(peaks, xs, ys, other_x, other_y) == 1.0
    assert F.sauc(-peaks, xs, ys, other_x, other_y) == 0.0
    # AUC-Judd thresholds at the fixated values only: reversed, its first point is already
    # (fp 1, tp 1/F) — the curve's area is 1/(2F), 0 as the fixations grow in number (with the
    # fixated values all tied, the one point is (1, 1) and the area 1/2).
    assert F.auc_judd(-peaks, xs, ys) == pytest.approx(0.5 / len(xs), abs=1e-15)
    assert F.auc_borji(peaks, xs, ys) > F.auc_borji(-peaks, xs, ys)


def test_the_baseline_against_itself_gains_nothing():
    baseline = np.random.default_rng(2).random((20, 30)) + 0.01
    xs, ys = np.array([3.5, 10.2, 10.2, 29.9]), np.array([0.0, 19.5, 19.5, 4.4])
    assert F.information_gain(baseline, baseline, xs, ys) == 0.0
    better = baseline.copy()
    better[ys.astype(int), xs.astype(int)] *= 10
    assert F.information_gain(better, baseline, xs, ys) > 0


def test_undefined_values_are_nan():
    smap = np.random.default_rng(3).random((10, 10))
    none = np.zeros(0)
    for value in (
        F.nss(smap, none, none),
        F.auc_judd(smap, none, none),
        F.auc_borji(smap, none, none),
        F.sauc(smap, none, none, [1.0], [1.0]),
        F.sauc(smap, [1.0], [1.0], none, none),
        F.information_gain(smap, smap, none, none),
        F.cc(np.ones((10, 10)), smap),  # pysaliency: 0 — undefined here (NULL with its reason in the store)
        F.nss(np.ones((10, 10)), [1.0], [1.0]),
        F.kl(np.full((10, 10), np.nan), smap),
    ):
        assert math.isnan(value)


def test_coordinates_follow_pysaliency_pixel_of_x_is_floor_x():
    assert F.fixation_pixels([0.0, 0.99, 1.0, -0.5, 9.999], [0.0, 0.0, 2.5, -0.2, 9.0], (10, 10)).tolist() == [0, 0, 21, 0, 99]


def test_torch_inputs_give_the_numpy_answer():
    torch = pytest.importorskip("torch")
    smap, xs, ys, *_ = case(0)
    density = np.random.default_rng(4).random(smap.shape)
    assert F.nss(torch.from_numpy(smap).float(), torch.from_numpy(xs), ys) == pytest.approx(
        F.nss(smap.astype(np.float32), xs, ys), abs=1e-12
    )
    assert F.cc(torch.from_numpy(smap), torch.from_numpy(density)) == F.cc(smap, density)


@pytest.mark.parametrize("levels", [None, 16])
def test_maps_larger_than_one_block_float32_and_many_fixations(levels):
    # 300×400 = 120,000 pixels: two float64 blocks of the sums, and AUC-Judd's bins shared by many
    # thresholds; float32 maps as the scorer passes them (compared with the same values in float64).
    smap, xs, ys, xi, yi = case(11, levels=levels, shape=(300, 400), n_fix=400)
    smap = smap.astype(np.float32)
    as64 = smap.astype(np.float64)
    density = (np.random.default_rng(12).random(smap.shape) ** 3).astype(np.float32)
    assert F.auc_judd(smap, xs, ys) == pytest.approx(py_AUC_Judd_no_jitter(as64, xi, yi), abs=TOL)
    assert F.nss(smap, xs, ys) == pytest.approx(py_NSS(as64, xi, yi).mean(), abs=1e-10)
    assert F.cc(smap, density) == pytest.approx(py_CC(as64, density.astype(np.float64)), abs=1e-10)
    assert F.kl(smap, density) == pytest.approx(py_MIT_KLDiv(as64, density.astype(np.float64)), abs=1e-10)
    assert F.sim(smap, density) == pytest.approx(py_SIM(as64, density.astype(np.float64)), abs=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counts_at_least_are_exact_however_the_thresholds_fall(dtype):
    from alignbench.metrics.fixation import _counts_at_least

    rng = np.random.default_rng(5)
    for values in (
        rng.random(200_000),  # more than one block
        np.floor(rng.random(5000) * 7) / 7,  # few distinct values: big tied blocks
        1.0 + rng.random(5000) * 1e-6,  # a range narrow against the values
        np.concatenate([np.zeros(5000), rng.random(50) * 1e30]),  # a range wide against most values
    ):
        flat = values.astype(dtype)
        chosen = np.unique(flat[rng.integers(0, flat.size, 40)].astype(np.float64))
        for thresholds in (chosen, np.unique(np.concatenate([chosen, np.nextafter(chosen, np.inf)])), chosen[:1]):
            brute = (flat.astype(np.float64)[None, :] >= thresholds[:, None]).sum(axis=1)
            assert _counts_at_least(flat, thresholds).tolist() == brute.tolist()


def test_nss_and_cc_keep_their_precision_on_a_map_with_a_large_offset():
    # one-pass moments about a sampled centre: no cancellation when the mean is 1e4 times the std
    smap, xs, ys, xi, yi = case(13, shape=(300, 400), n_fix=50)
    offset = 1e4 + smap
    density = np.random.default_rng(14).random(smap.shape)
    # Both sides sum 120,000 values ≈ 1e4 in float64, pairwise or in 8 blocks of pairwise sums: each mean
    # is off by ≲ 2·log2(120,000)·2⁻⁵²·1e4 ≈ 8e-11, i.e. ≲ 3e-10 after dividing by the std ≈ 0.29; a
    # one-pass Σx² − N·mean² would lose ~1e8·2⁻⁵² ≈ 2e-8 of the variance — the bound 1e-8 tells them apart.
    assert F.nss(offset, xs, ys) == pytest.approx(py_NSS(offset, xi, yi).mean(), abs=1e-8)
    assert F.cc(offset, density) == pytest.approx(py_CC(offset, density), abs=1e-8)

"""spearman / rank_average / spearman_from_ranks: known answers, equality with scipy, degenerate maps."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import ConstantInputWarning, rankdata, spearmanr

import alignbench
from alignbench.metrics import METRICS, metric_function
from alignbench.metrics.spearman import rank_average, spearman, spearman_from_ranks


def scipy_rho(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        for x, y in zip(a.reshape(len(a), -1).double().numpy(), b.reshape(len(b), -1).double().numpy()):
            out.append(spearmanr(x, y)[0])
    return np.array(out)


def test_known_answers_on_8x8_maps():
    ramp = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8)
    assert spearman(ramp, ramp).item() == 1.0
    assert spearman(ramp, -ramp).item() == -1.0
    assert spearman(ramp, ramp**3 + 5).item() == 1.0  # monotone transforms keep the ranks
    # Left half 0, right half 1, against the row-major ramp 0..63: ρ is Pearson's r of a balanced
    # binary variable, (mean right − mean left) · ½ / sd(ramp) = (5.5 − 1.5) · ½ / sqrt((64² − 1)/12).
    halves = (torch.arange(8) >= 4).float().expand(8, 8).reshape(1, 8, 8)
    assert spearman(halves, ramp).item() == pytest.approx(2.0 / np.sqrt(4095 / 12), abs=1e-14)  # float64 rounding of the n-term rank sums


def test_rank_average_matches_scipy_with_ties():
    x = torch.tensor([[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0]])
    expected = rankdata(x.numpy(), method="average", axis=-1)
    assert torch.equal(rank_average(x), torch.from_numpy(expected))
    assert rank_average(x).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int32, torch.int64, torch.uint8])
def test_equals_scipy_on_random_maps_with_ties(dtype):
    generator = torch.Generator().manual_seed(1)
    # quantised values give many ties, as ClickMe maps (large zero areas) and thresholded CAMs do
    a = (torch.rand(6, 17, 23, generator=generator) * 7).floor() - 3
    b = torch.randn(6, 17, 23, generator=generator)
    if dtype.is_floating_point:
        b = b.to(dtype)
    else:
        b = (b * 4).round()
        b = (b - b.min()).to(dtype) if dtype == torch.uint8 else b.to(dtype)
    a = a.to(dtype) if dtype != torch.uint8 else (a + 3).to(dtype)
    ours = spearman(a, b).numpy()
    assert np.abs(ours - scipy_rho(a, b)).max() <= 1e-12  # float64 rounding of the n-term rank sums
    ranks = rank_average(a.reshape(6, -1))
    assert torch.equal(ranks, torch.from_numpy(rankdata(a.reshape(6, -1).double().numpy(), axis=-1)))


def test_equals_scipy_on_224_maps():
    generator = torch.Generator().manual_seed(2)
    cams = torch.nn.functional.interpolate(torch.rand(4, 1, 7, 7, generator=generator), size=(224, 224), mode="bilinear")[:, 0]
    reference = torch.relu(torch.randn(4, 224, 224, generator=generator))  # half the pixels tie at 0
    assert np.abs(spearman(cams, reference).numpy() - scipy_rho(cams, reference)).max() <= 1e-12  # float64 rounding of the n-term rank sums


def test_negative_zero_ties_with_zero():
    a = torch.tensor([[0.0, -0.0, 1.0, 2.0]])
    assert torch.equal(rank_average(a), torch.tensor([[1.5, 1.5, 3.0, 4.0]], dtype=torch.float64))


def test_degenerate_maps_give_nan_and_others_are_kept():
    good = torch.arange(16.0).reshape(1, 4, 4)
    constant = torch.full((1, 4, 4), 0.3)
    with_nan = good.clone()
    with_nan[0, 1, 1] = float("nan")
    with_inf = good.clone()
    with_inf[0, 0, 0] = float("inf")
    a = torch.cat([good, constant, with_nan, with_inf, good])
    b = torch.cat([good, good, good, good, constant])
    rho = spearman(a, b)
    assert rho[0].item() == 1.0
    assert torch.isnan(rho[1:]).all()


def test_maps_larger_than_the_exact_range():
    # 400×400 = 160,000 pixels > 2**17: the rank sums are no longer exact in float64, yet ρ stays
    # within 1e-12 of scipy and a constant map is still NaN (found by its values, not its spread).
    generator = torch.Generator().manual_seed(4)
    a = torch.rand(2, 400, 400, generator=generator).round(decimals=2)
    b = torch.rand(2, 400, 400, generator=generator) + a
    b[1] = 7.0
    rho = spearman(a, b)
    assert abs(rho[0].item() - scipy_rho(a[:1], b[:1])[0]) <= 1e-12 and torch.isnan(rho[1])  # float64 rounding of the n-term rank sums


@pytest.mark.parametrize("side", [300, 400])
def test_rows_sorted_one_at_a_time_keep_their_groups(side):
    # Rows whose last and first values are equal must not share a tie group.
    generator = torch.Generator().manual_seed(5)
    row = (torch.rand(side * side, generator=generator) * 50).floor()
    row[0], row[-1] = 7.0, 7.0
    rows = torch.stack([row, row.flip(0), row, row])
    expected = torch.from_numpy(rankdata(rows.double().numpy(), axis=-1))
    assert torch.equal(rank_average(rows), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int16, torch.uint8, torch.bool])
def test_radix_sorted_rows_equal_scipy_for_every_key_type(dtype):
    # 224×224 rows take the one-row-at-a-time radix path: signed values, both zeros, infinities and
    # large tied regions must keep scipy's order and average ranks.
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(3, 224 * 224, generator=generator)
    x[:, ::3] = 0.0
    x[:, 1::7] = -0.0
    if dtype.is_floating_point:
        x[0, 5], x[0, 6], x[1, 9] = float("inf"), float("-inf"), float("-inf")
        x = x.to(dtype)
    elif dtype == torch.bool:
        x = x > 0.5
    else:
        x = (x * 20).round().clamp(0 if dtype == torch.uint8 else -300, 255).to(dtype)
    expected = rankdata(x.double().numpy(), method="average", axis=-1)
    assert torch.equal(rank_average(x), torch.from_numpy(expected))
    other = torch.rand(3, 224 * 224, generator=generator)
    if dtype.is_floating_point:
        return  # ±inf rows are undefined for spearman; the ranks above are what counts
    assert np.abs(spearman(x, other).numpy() - scipy_rho(x, other)).max() <= 1e-12  # float64 rounding of the n-term rank sums


def test_ranking_leaves_the_thread_count_as_it_was():
    threads = torch.get_num_threads()
    rank_average(torch.rand(2, 224 * 224))
    assert torch.get_num_threads() == threads


def test_spearman_from_ranks_equals_spearman():
    generator = torch.Generator().manual_seed(3)
    pred = torch.randn(5, 32, 32, generator=generator)
    ref = torch.relu(torch.randn(5, 32, 32, generator=generator))
    ref[2] = 1.0  # constant reference → NaN
    ranks = rank_average(ref.reshape(5, -1)).to(torch.float32)  # the cache stores float32
    expected = spearman(pred, ref)
    got = spearman_from_ranks(pred, ranks)
    assert torch.isnan(got[2]) and torch.isnan(expected[2])
    keep = torch.tensor([0, 1, 3, 4])
    assert (got[keep] - expected[keep]).abs().max().item() <= 1e-12  # float64 rounding of the n-term rank sums
    nan_row = torch.full_like(ranks[:1], float("nan"))  # how the cache marks a non-finite reference
    assert torch.isnan(spearman_from_ranks(pred[:1], nan_row)).all()


def test_shape_errors_and_empty_batches():
    with pytest.raises(ValueError):
        spearman(torch.rand(2, 4, 4), torch.rand(2, 4, 5))
    with pytest.raises(ValueError):
        spearman(torch.rand(16), torch.rand(16))
    assert spearman(torch.rand(0, 4, 4), torch.rand(0, 4, 4)).shape == (0,)


def test_public_api_and_registry():
    assert alignbench.spearman is spearman
    spec = METRICS["spearman"]
    assert spec.higher_is_better and not spec.needs_boxes and not spec.needs_model
    compute = metric_function("spearman")
    maps = torch.arange(32.0).reshape(2, 4, 4)
    batch = {"reference": maps.clone()}
    assert compute(maps, batch).tolist() == [1.0, 1.0]
    batch["reference_ranks"] = rank_average(maps.reshape(2, -1)).float()
    assert compute(-maps, batch).tolist() == [-1.0, -1.0]


def test_metrics_registry_does_not_import_torch():
    code = "import sys, alignbench.metrics as m; assert 'spearman' in m.METRICS; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("side", [8, 224])  # one batched sort; one radix sort per row
def test_undefined_rows_are_found_from_the_sorted_ends(dtype, side):
    # NaN of either sign, ±inf and constant rows are undefined, whichever map holds them; rank_average
    # gives NaN rows exactly where a NaN is (scipy: nan_policy="propagate"), ±inf rows keep their ranks.
    generator = torch.Generator().manual_seed(7)
    good = torch.rand(side * side, generator=generator)
    rows = good.repeat(7, 1)
    negative_nan = -torch.tensor(float("nan"))
    assert negative_nan.view(torch.int32) < 0  # the sign bit is set
    rows[1, 3], rows[2, 5], rows[3, 0], rows[4, 9] = float("nan"), negative_nan, float("inf"), float("-inf")
    rows[5] = 0.25
    rows = rows.to(dtype)
    other = torch.rand(7, side * side, generator=generator).to(dtype)
    expected = torch.tensor([False, True, True, True, True, True, False])
    assert torch.equal(torch.isnan(spearman(rows, other)), expected)
    assert torch.equal(torch.isnan(spearman(other, rows)), expected)
    ranks = rank_average(rows)
    nan_rows = torch.tensor([False, True, True, False, False, False, False])
    assert torch.equal(torch.isnan(ranks).all(dim=1), nan_rows)
    # ranks of a map with ±inf are ordinary ranks (the reference-rank cache stores a NaN row for a
    # non-finite reference instead): from ranks, only the NaN and constant rows are undefined
    assert torch.equal(torch.isnan(spearman_from_ranks(other, ranks.float())), nan_rows | (torch.arange(7) == 5))
    assert torch.equal(torch.isnan(spearman_from_ranks(rows, rank_average(other).float())), expected)
    finite = [0, 3, 4, 5, 6]
    assert torch.equal(ranks[finite], torch.from_numpy(rankdata(rows[finite].double().numpy(), axis=-1)))


def _rows_in_child(queue) -> None:
    from alignbench._utils.threads import for_each_row

    # No OpenMP region runs here: libgomp itself hangs in a forked child that uses more than one
    # thread (why DataLoader workers run torch on one); the row threads are what is checked.
    torch.set_num_threads(2)
    seen: list[int] = []
    for_each_row(6, seen.append)
    queue.put(sorted(seen))


def test_row_threads_work_in_a_forked_child_and_pass_errors_on():
    # The parent's helper threads are not inherited through fork: a child must make its own.
    import multiprocessing

    from alignbench._utils.threads import for_each_row

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rank_average(torch.rand(4, 224 * 224))  # the parent's helper pool exists now
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_rows_in_child, args=(queue,))
        child.start()
        child.join(timeout=60)
        if child.exitcode is None:
            child.kill()
        assert child.exitcode == 0 and queue.get(timeout=5) == list(range(6))

        seen = []

        def work(row: int) -> None:
            seen.append(row)
            if row == 5:
                raise ValueError("row 5")

        with pytest.raises(ValueError, match="row 5"):
            for_each_row(8, work)
        assert torch.get_num_threads() == 2 and 5 in seen
    finally:
        torch.set_num_threads(threads)

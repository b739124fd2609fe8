"""Spearman rank correlation per image, batched in torch, equal to ``scipy.stats.spearmanr``.

ρ is Pearson's correlation of the average ranks (ties share the mean of the ranks they span), exactly
as scipy computes it: ``rankdata(method="average")`` then ``np.corrcoef``. Ranks are exact in float64
(integers and halves), and the correlation is accumulated in float64, so the result matches scipy to
rounding (|diff| ≤ 1e-12; see tests/metrics/test_spearman.py and benchmarks/spearman.py).

Degenerate inputs are explicit, never dropped: a map that is constant or holds a non-finite value
gives NaN for its image (scipy gives NaN for constant input too), and the caller counts NaNs as
skipped images.

Speed: ranking is one sort per map. Maps of 32-bit (or narrower) floats become int32 keys (an
order-preserving integer image of each float). On the CPU each row is sorted (a stable 1-D sort of
int32, which torch runs as a 4-pass radix sort), ranked and, for ρ, gathered and summed by one
thread on its own, rows shared out between as many Python threads as torch has
(alignbench._utils.threads.for_each_row): no OpenMP barrier per pass, a busy core slows one row rather
than all, and a row's working set stays in cache. float64/int64 maps, small maps and other devices
use one batched ``torch.sort(dim=-1)``. ρ is taken in one map's sorted order (the other map's ranks
are gathered into it), so only the other map's ranks are ever scattered back to pixel order. A
reference map's ranks can be computed once and passed to :func:`spearman_from_ranks` (the datasets'
reference-rank cache does that across runs), which halves the work per image.
benchmarks/spearman.py measures both against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from alignbench._utils.threads import for_each_row

__all__ = ["METRIC_FUNCTIONS", "rank_average", "spearman", "spearman_from_ranks"]


def _as_rows(x: Tensor | object, name: str) -> Tensor:
    """[B, ...] → [B, N] (a view where possible)."""
    x = torch.as_tensor(x)
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if x.dim() < 2:
        raise ValueError(f"{name} must be batched, shape [B, H, W] or [B, N]; got {tuple(x.shape)}")
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


_SMALL_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32)
# Below this many pixels a row is not radix-sorted by torch (its GRAIN_SIZE), so one batched sort wins.
_RADIX_MIN_PIXELS = 32768


def _sort_keys(rows: Tensor) -> Tensor:
    """Each value as an order-preserving int32 (equal values, equal keys), or the values themselves
    when 32 bits cannot hold them (float64, int64)."""
    if rows.dtype in (torch.float32, torch.float16, torch.bfloat16):
        # Adding 0.0 maps -0.0 to +0.0: the two zeros are equal as floats, so they must share a key.
        bits = (rows.to(torch.float32) + 0.0).view(torch.int32)
        # IEEE-754 order as a signed integer: flip the magnitude bits of negative floats.
        return bits ^ ((bits >> 31) & 0x7FFFFFFF)
    if rows.dtype in _SMALL_INTEGERS:
        return rows.to(torch.int32)
    return rows


def _by_row(rows: Tensor, keys: Tensor) -> bool:
    """Whether the rows are ranked one at a time (CPU, int32 keys, rows torch radix-sorts)."""
    return rows.device.type == "cpu" and keys.dtype == torch.int32 and keys.shape[1] >= _RADIX_MIN_PIXELS


# The int32 keys of ±inf (see _sort_keys): every NaN key lies beyond them, +NaN above, −NaN below.
_KEY_POS_INF = 0x7F800000
_KEY_NEG_INF = -0x7F800000 - 1


def _end_flags(rows: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """(holds a NaN, ρ undefined: a NaN or ±inf, or every value equal) per row, from the smallest and
    largest sorted key (or value) of each row — no extra pass over the values."""
    if low.dtype == torch.int32 and rows.is_floating_point():
        has_nan = (high > _KEY_POS_INF) | (low < _KEY_NEG_INF)
        return has_nan, (low == high) | (high >= _KEY_POS_INF) | (low <= _KEY_NEG_INF)
    if rows.is_floating_point():  # sorted values; torch.sort puts NaN last
        return torch.isnan(high), (low == high) | ~torch.isfinite(low) | ~torch.isfinite(high)
    return torch.zeros_like(low, dtype=torch.bool), low == high


def _tie_ranks(starts: Tensor, n: int) -> Tensor:
    """Average ranks in sorted order (float64, 1-based, flat) from ``starts`` (flat bool: a position
    begins a run of equal keys) over rows of ``n`` sorted keys laid end to end, each row starting a
    run: positions p … p + c − 1 of a run share (p mod n) + (c + 1)/2."""
    total = starts.shape[0]
    group_start = torch.nonzero(starts).squeeze(1)
    if group_start.shape[0] == total:  # no ties
        ranks = torch.arange(1, n + 1, dtype=torch.float64, device=starts.device)
        return ranks if total == n else ranks.repeat(total // n)
    counts = torch.diff(group_start, append=group_start.new_tensor([total]))
    first = group_start if total == n else group_start % n  # one row: no remainder to take
    group_rank = first.to(torch.float64) + (counts.to(torch.float64) + 1.0) * 0.5
    return torch.repeat_interleave(group_rank, counts, output_size=total)


def _row_ranks(keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One CPU row of int32 keys → (sorted keys, perm, ranks in sorted order): the value at column
    ``perm[j]`` has the average rank ``ranks[j]`` (float64, 1-based).

    A stable 1-D sort of int32 is torch's 4-pass radix sort (64-bit keys, or a batched sort, take 8
    passes); one row's keys, indices and ranks (1 MB) stay in cache.
    """
    n = keys.shape[0]
    sorted_keys, perm = torch.sort(keys, stable=True)
    starts = torch.empty(n, dtype=torch.bool)
    starts[0] = True
    torch.ne(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
    return sorted_keys, perm, _tie_ranks(starts, n)


@dataclass(frozen=True)
class _Sorted:
    """Each row sorted and ranked: row r's value at column ``perm[r, j]`` has the average rank
    ``ranks[r, j]``; per row, whether it holds a NaN and whether ρ is undefined for it."""

    perm: Tensor
    ranks: Tensor
    has_nan: Tensor
    undefined: Tensor


def _sorted_ranks(rows: Tensor, keys: Tensor) -> _Sorted:
    """All rows at once (GPU, float64/int64 maps, small maps): one ``torch.sort(dim=-1)``, tie groups
    found along the flattened batch (a group never spans two rows, as each row starts one)."""
    batch, n = rows.shape
    sorted_keys, perm = torch.sort(keys, dim=-1)
    has_nan, undefined = _end_flags(rows, sorted_keys[:, 0], sorted_keys[:, -1])
    starts = torch.ones((batch, n), dtype=torch.bool, device=rows.device)
    torch.ne(sorted_keys[:, 1:], sorted_keys[:, :-1], out=starts[:, 1:])
    return _Sorted(perm, _tie_ranks(starts.reshape(-1), n).reshape(batch, n), has_nan, undefined)


def _rank_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """(average ranks in pixel order, float64 with NaN rows where a value is NaN; undefined rows)."""
    keys = _sort_keys(rows)
    if not _by_row(rows, keys):
        ranked = _sorted_ranks(rows, keys)
        ranks = torch.empty(rows.shape, dtype=torch.float64, device=rows.device).scatter_(1, ranked.perm, ranked.ranks)
        has_nan, undefined = ranked.has_nan, ranked.undefined
    else:
        ranks = torch.empty(rows.shape, dtype=torch.float64)
        ends = torch.empty((rows.shape[0], 2), dtype=torch.int32)

        def rank_row(r: int) -> None:
            sorted_keys, perm, sorted_ranks = _row_ranks(keys[r])
            ranks[r].scatter_(0, perm, sorted_ranks)
            ends[r, 0], ends[r, 1] = sorted_keys[0], sorted_keys[-1]

        for_each_row(rows.shape[0], rank_row)  # whole rows per thread, each on one torch thread (see _threads)
        has_nan, undefined = _end_flags(rows, ends[:, 0], ends[:, 1])
    ranks[has_nan] = float("nan")
    return ranks, undefined


def rank_average(x: Tensor) -> Tensor:
    """Average ranks (1-based, ties share their mean rank) along the last dim, as float64.

    Equal to ``scipy.stats.rankdata(x, method="average", axis=-1)``; a row holding NaN is all NaN
    (scipy's ``nan_policy="propagate"``).
    """
    x = torch.as_tensor(x)
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    shape = x.shape
    rows = x.reshape(-1, shape[-1]) if x.dim() else x.reshape(1, 1)
    if rows.numel() == 0:
        return torch.zeros(shape, dtype=torch.float64, device=x.device)
    return _rank_rows(rows)[0].reshape(shape)


def _pearson_of_rank_sums(cross: Tensor, square_a: Tensor, square_b: Tensor, n: int) -> Tensor:
    """Pearson's correlation per row of two rank vectors of N average ranks, from their raw sums
    Σ a·b, Σ a² and Σ b² (float64 [B]).

    Every row of average ranks has mean (N + 1)/2, so the centred sums are raw sums minus
    N·((N + 1)/2)². Ranks are integers and halves: for N ≤ 2**17 pixels every product and partial sum
    is a multiple of 1/4 below 2**51, so the sums, in any order, and the covariance are exact in
    float64 (beyond that, rounding stays near 1e-15). Rows that are constant must be masked by the
    caller.
    """
    mean_square = n * ((n + 1) / 2.0) ** 2
    covariance = cross - mean_square
    # One rounding in the denominator: identical maps give exactly 1 (sqrt of a square is exact).
    return (covariance / torch.sqrt((square_a - mean_square) * (square_b - mean_square))).clamp(-1.0, 1.0)


def _undefined_rows(rows: Tensor) -> Tensor:
    """Rows where ρ is undefined: a non-finite value, or every value equal (a constant map)."""
    low, high = torch.aminmax(rows, dim=1)  # NaN propagates to both; ±inf shows in one
    undefined = low == high
    if rows.is_floating_point():
        undefined |= ~(torch.isfinite(low) & torch.isfinite(high))
    return undefined


def _spearman_sorted(rows: Tensor, other_ranks: Tensor) -> Tensor:
    """ρ per row between the maps ``rows`` and the ranks ``other_ranks`` of the other maps (float),
    NaN where ``rows`` is undefined (the caller masks the other side).

    Pearson's correlation does not depend on the order of the pixels, so it is taken in the sorted
    order of ``rows``: the other map's ranks are gathered into that order (in their own dtype, then
    widened), rather than this map's ranks scattered back into pixel order. On the CPU each row is
    sorted, ranked, gathered and summed by one thread, with nothing [B, N] but the inputs.
    """
    n = rows.shape[1]
    keys = _sort_keys(rows)
    if not _by_row(rows, keys):
        ranked = _sorted_ranks(rows, keys)
        ranks, other = ranked.ranks, other_ranks.gather(1, ranked.perm).to(torch.float64)
        sums = (torch.linalg.vecdot(ranks, other), torch.linalg.vecdot(ranks, ranks), torch.linalg.vecdot(other, other))
        return _pearson_of_rank_sums(*sums, n).masked_fill(ranked.undefined, float("nan"))
    sums = torch.empty((rows.shape[0], 3), dtype=torch.float64)
    ends = torch.empty((rows.shape[0], 2), dtype=torch.int32)

    def correlate_row(r: int) -> None:
        sorted_keys, perm, ranks = _row_ranks(keys[r])
        other = other_ranks[r].index_select(0, perm).to(torch.float64)
        sums[r, 0], sums[r, 1], sums[r, 2] = torch.dot(ranks, other), torch.dot(ranks, ranks), torch.dot(other, other)
        ends[r, 0], ends[r, 1] = sorted_keys[0], sorted_keys[-1]

    for_each_row(rows.shape[0], correlate_row)
    _, undefined = _end_flags(rows, ends[:, 0], ends[:, 1])
    return _pearson_of_rank_sums(sums[:, 0], sums[:, 1], sums[:, 2], n).masked_fill(undefined, float("nan"))


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's ρ per image between two batches of maps ([B, H, W] or [B, N]) → float64 [B].

    NaN for an image where either map is constant or holds a non-finite value.
    """
    rows_a, rows_b = _as_rows(a, "a"), _as_rows(b, "b")
    if rows_a.shape != rows_b.shape:
        raise ValueError(f"spearman needs maps of one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    rows_b = rows_b.to(rows_a.device)
    if rows_a.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=rows_a.device)
    ranks_b, undefined_b = _rank_rows(rows_b)
    return _spearman_sorted(rows_a, ranks_b).masked_fill(undefined_b, float("nan"))


def spearman_from_ranks(pred: Tensor, ref_ranks: Tensor) -> Tensor:
    """Spearman's ρ per image of raw maps ``pred`` against precomputed reference ranks → float64 [B].

    ``ref_ranks`` are :func:`rank_average` of the reference maps (any float dtype: ranks are integers
    and halves, exact in float32 up to 2**23 pixels), flattened or not; a row of NaN marks a
    reference that was non-finite. NaN where the prediction is constant or non-finite, or the
    reference is constant or NaN.
    """
    rows_pred = _as_rows(pred, "pred")
    ranks_ref = _as_rows(ref_ranks, "ref_ranks").to(rows_pred.device)
    if not ranks_ref.is_floating_point():
        ranks_ref = ranks_ref.to(torch.float64)
    if rows_pred.shape != ranks_ref.shape:
        raise ValueError(
            f"pred and ref_ranks must hold as many maps of as many pixels; got {tuple(rows_pred.shape)} and {tuple(ranks_ref.shape)}"
        )
    if rows_pred.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=rows_pred.device)
    undefined_ref = _undefined_rows(ranks_ref)  # NaN ranks are non-finite
    return _spearman_sorted(rows_pred, ranks_ref).masked_fill(undefined_ref, float("nan"))


def _spearman_metric(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None) -> Tensor:
    """Scorer adapter: the batch's cached reference ranks when the dataset supplied them. On a
    fixation dataset (its batches carry ``density``), at each stimulus's size against the fixation
    density, the map upsampled as for the fixation metrics (alignbench.metrics.fixation); NaN for an
    image without fixations."""
    if "density" in batch:
        from alignbench.metrics.fixation import stimulus_maps

        upsampled = stimulus_maps(maps, batch)
        values = [
            spearman(upsampled.float32(i)[None], torch.as_tensor(batch["density"][i])[None]).item()
            if len(batch["fixations"][i])
            else math.nan
            for i in range(maps.shape[0])
        ]
        return torch.tensor(values, dtype=torch.float64)
    if "reference_ranks" in batch:
        return spearman_from_ranks(maps, batch["reference_ranks"])
    return spearman(maps, batch["reference"].to(maps.device))


METRIC_FUNCTIONS = {"spearman": _spearman_metric}

"""Spearman rank correlation per image, batched in torch, equal to ``scipy.stats.spearmanr``.

ρ is Pearson's correlation of the average ranks (ties share the mean of the ranks they span), exactly
as scipy computes it: ``rankdata(method="average")`` then ``np.corrcoef``. Ranks are exact in float64
(integers and halves), and the correlation is accumulated in float64, so the result matches scipy to
rounding (|diff| ≤ 1e-12; see tests/test_spearman.py and benchmarks/spearman.py).

Degenerate inputs are explicit, never dropped: a map that is constant or holds a non-finite value
gives NaN for its image (scipy gives NaN for constant input too), and the caller counts NaNs as
skipped images.

Speed: ranking is one sort per map. On the CPU, maps of 32-bit (or narrower) floats become int64 keys
(an order-preserving integer image of each float, with the row number in the high bits) sorted a few
rows at a time with a stable 1-D sort, which torch runs as a radix sort; other dtypes and devices use
``torch.sort(dim=-1)``. A reference map's ranks can be computed once and passed to
:func:`spearman_from_ranks` (the datasets' reference-rank cache does that across runs), which halves
the work per image. benchmarks/spearman.py measures both against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["METRIC_FUNCTIONS", "rank_average", "spearman", "spearman_from_ranks"]


def _as_rows(x: Tensor | object, name: str) -> Tensor:
    """[B, ...] → [B, N] (a view where possible)."""
    x = torch.as_tensor(x)
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if x.dim() < 2:
        raise ValueError(f"{name} must be batched, shape [B, H, W] or [B, N]; got {tuple(x.shape)}")
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


_SMALL_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.bool)
_KEYS_PER_SORT = 1 << 18


def _sorted_ties(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row; return (flat permutation, flat bool 'starts a new tie group').

    ``perm[j]`` is the flat index (row * N + column) of the j-th element in row-major sorted order; a
    tie group never spans two rows.
    """
    if rows.dtype in (torch.float32, torch.float16, torch.bfloat16):
        # Adding 0.0 maps -0.0 to +0.0: the two zeros are equal as floats, so they must share a key.
        bits = (rows.to(torch.float32) + 0.0).view(torch.int32)
        # IEEE-754 order as a signed integer: flip the magnitude bits of negative floats.
        values = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    elif rows.dtype in _SMALL_INTEGERS:
        values = rows
    else:  # float64, int64: a 32-bit key would merge distinct values
        return _sorted_ties_per_row(rows)
    if rows.device.type != "cpu":
        return _sorted_ties_per_row(values)
    # On the CPU a stable sort of a 1-D int64 tensor is a radix sort. Rows are sorted a few at a
    # time, row number in the high 32 bits of the key: ~2**18 keys and their indices (4 MB) stay in
    # cache, which makes it ~2.5x faster than one sort of a 32-map batch and than torch.sort(dim=-1),
    # while few sort calls keep the thread pool's synchronisation cheap on a busy machine.
    batch, n = rows.shape
    rows_per_sort = max(1, _KEYS_PER_SORT // n)
    keys = values.to(torch.int64) + (1 << 31)  # [0, 2**32)
    keys += (torch.arange(batch, dtype=torch.int64) % rows_per_sort << 32).unsqueeze(1)
    keys = keys.reshape(-1)
    sorted_keys = torch.empty_like(keys)
    perm = torch.empty_like(keys)
    for start in range(0, batch * n, rows_per_sort * n):
        end = min(start + rows_per_sort * n, batch * n)
        torch.sort(keys[start:end], stable=True, out=(sorted_keys[start:end], perm[start:end]))
        perm[start:end] += start
    starts = torch.ones_like(sorted_keys, dtype=torch.bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]  # the row bits differ across rows of one sort
    starts[::n] = True  # and a row starting a new sort always starts a group
    return perm, starts


def _sorted_ties_per_row(rows: Tensor) -> tuple[Tensor, Tensor]:
    batch, n = rows.shape
    sorted_rows, perm = torch.sort(rows, dim=-1)
    starts = torch.ones_like(sorted_rows, dtype=torch.bool)
    starts[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    offsets = torch.arange(batch, device=rows.device, dtype=torch.int64).unsqueeze(1) * n
    return (perm + offsets).reshape(-1), starts.reshape(-1)


def rank_average(x: Tensor) -> Tensor:
    """Average ranks (1-based, ties share their mean rank) along the last dim, as float64.

    Equal to ``scipy.stats.rankdata(x, method="average", axis=-1)``; a row holding NaN is all NaN
    (scipy's ``nan_policy="propagate"``).
    """
    x = torch.as_tensor(x)
    shape = x.shape
    rows = x.reshape(-1, shape[-1]) if x.dim() else x.reshape(1, 1)
    batch, n = rows.shape
    if rows.numel() == 0:
        return torch.zeros(shape, dtype=torch.float64, device=x.device)
    perm, starts = _sorted_ties(rows)
    # Ranks are counted along the flattened batch (row r's values hold ranks r·N + 1 … r·N + N, as a
    # tie group never spans two rows) and the row offset is subtracted at the end: no per-element
    # position lookup. A tie group at flat positions p … p + c − 1 shares rank p + (c + 1)/2.
    if bool(starts.all()):
        flat_ranks = torch.arange(1, batch * n + 1, device=x.device, dtype=torch.float64)
    else:
        group_start = torch.nonzero(starts).squeeze(1)
        counts = torch.diff(group_start, append=group_start.new_tensor([batch * n]))
        group_rank = group_start.to(torch.float64) + (counts.to(torch.float64) + 1.0) * 0.5
        flat_ranks = torch.repeat_interleave(group_rank, counts, output_size=batch * n)
    ranks = torch.empty(batch * n, dtype=torch.float64, device=x.device).scatter_(0, perm, flat_ranks)
    ranks = ranks.reshape(batch, n)
    ranks -= torch.arange(0, batch * n, n, device=x.device, dtype=torch.float64).unsqueeze(1)
    if rows.is_floating_point():
        ranks[torch.isnan(rows).any(dim=1)] = float("nan")
    return ranks.reshape(shape)


def _pearson_of_ranks(ranks_a: Tensor, ranks_b: Tensor) -> Tensor:
    """Pearson correlation per row of two float64 rank matrices [B, N].

    Every row of average ranks has mean (N + 1)/2, so the centred sums are raw sums minus
    N·((N + 1)/2)². Ranks are integers and halves: for N ≤ 2**17 pixels every product and partial sum
    is a multiple of 1/4 below 2**51, so both terms, and the covariance, are exact in float64 (beyond
    that, rounding stays near 1e-15). Rows that are constant must be masked by the caller.
    """
    n = ranks_a.shape[1]
    mean_square = n * ((n + 1) / 2.0) ** 2
    covariance = torch.linalg.vecdot(ranks_a, ranks_b) - mean_square
    spread_a = torch.linalg.vecdot(ranks_a, ranks_a) - mean_square
    spread_b = torch.linalg.vecdot(ranks_b, ranks_b) - mean_square
    # One rounding in the denominator: identical maps give exactly 1 (sqrt of a square is exact).
    return (covariance / torch.sqrt(spread_a * spread_b)).clamp(-1.0, 1.0)


def _undefined_rows(rows: Tensor) -> Tensor:
    """Rows where ρ is undefined: a non-finite value, or every value equal (a constant map)."""
    low, high = torch.aminmax(rows, dim=1)  # NaN propagates to both; ±inf shows in one
    undefined = low == high
    if rows.is_floating_point():
        undefined |= ~(torch.isfinite(low) & torch.isfinite(high))
    return undefined


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
    undefined = _undefined_rows(rows_a) | _undefined_rows(rows_b)
    if rows_a.dtype == rows_b.dtype:  # one sort call ranks both batches
        ranks = rank_average(torch.cat([rows_a, rows_b]))
        ranks_a, ranks_b = ranks[: len(rows_a)], ranks[len(rows_a) :]
    else:
        ranks_a, ranks_b = rank_average(rows_a), rank_average(rows_b)
    return _pearson_of_ranks(ranks_a, ranks_b).masked_fill(undefined, float("nan"))


def spearman_from_ranks(pred: Tensor, ref_ranks: Tensor) -> Tensor:
    """Spearman's ρ per image of raw maps ``pred`` against precomputed reference ranks → float64 [B].

    ``ref_ranks`` are :func:`rank_average` of the reference maps (any float dtype: ranks are integers
    and halves, exact in float32 up to 2**23 pixels), flattened or not; a row of NaN marks a
    reference that was non-finite. NaN where the prediction is constant or non-finite, or the
    reference is constant or NaN.
    """
    rows_pred = _as_rows(pred, "pred")
    ranks_ref = _as_rows(ref_ranks, "ref_ranks").to(device=rows_pred.device, dtype=torch.float64)
    if rows_pred.shape != ranks_ref.shape:
        raise ValueError(
            f"pred and ref_ranks must hold as many maps of as many pixels; got {tuple(rows_pred.shape)}"
            f" and {tuple(ranks_ref.shape)}"
        )
    if rows_pred.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=rows_pred.device)
    undefined = _undefined_rows(rows_pred) | _undefined_rows(ranks_ref)  # NaN ranks are non-finite
    return _pearson_of_ranks(rank_average(rows_pred), ranks_ref).masked_fill(undefined, float("nan"))


def _spearman_metric(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None) -> Tensor:
    """Scorer adapter: the batch's cached reference ranks when the dataset supplied them."""
    if "reference_ranks" in batch:
        return spearman_from_ranks(maps, batch["reference_ranks"])
    return spearman(maps, batch["reference"].to(maps.device))


METRIC_FUNCTIONS = {"spearman": _spearman_metric}

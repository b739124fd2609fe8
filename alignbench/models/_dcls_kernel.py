"""DCLS kernel construction that keeps nothing for backward: the dense kernel from (weight, P, SIG).

dcls 0.1.1's ``ConstructKernel2d`` evaluates every element at every tap of the D×D span — a
D×D×out×in×count grid per intermediate, all of it kept by autograd (15–26 MiB per 96-channel
layer). Yet an element touches few taps: v0 and v1 interpolate it bilinearly onto its 4 integer
neighbours, and the Gaussian of ``gauss`` is separable into a row and a column profile. Written
as autograd Functions with their gradients by hand (no library computes "the kernel of learnable
positions"), the construction scatters 4 values per element forward, gathers them back in
backward, and saves only the parameters themselves: the per-element factors are recomputed.

The formulas are the package's, axis for axis (``forward_v0``, ``forward_v1``, ``forward_vgauss``
in DCLS/construct/modules.py); so are the gradients' conventions where the package's autograd
takes a subgradient: v0's fractional part has slope 1 everywhere (``floor`` has no gradient),
v1's tent ``relu(1 − |i − p|)`` has slope 0 at integer positions (``abs'(0) = relu'(0) = 0``), and
gauss's width ``|SIG| + 0.27`` has slope 0 at SIG = 0. Elements outside the span lose the taps
that fall outside, and v1/gauss renormalise over the taps that remain, as the package does.

The kernel comes back trimmed to the centred window that holds every tap an element reaches
(``construct``); the convolution pads by (D − window) / 2 less, which gives the same output. For
v0 the window holds both bilinear neighbours of every element even where one has weight 0,
because its slope w.r.t. the position is 1 there; v1 leaves out the upper neighbour of an integer
position (weight 0, slope 0); gauss drops rows and columns where every element's profile is below
1e-9 of its own peak, which changes the kernel by less than float32 rounding does.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from alignbench._utils.threads import one_torch_thread

# DCLS normalises v1/gauss elements by (sum of the element's taps + 1e-7), and widens every
# Gaussian by 0.27: ConstructKernel2d.forward_v1 / forward_vgauss.
_NORM_EPS = 1e-7
_SIGMA_FLOOR = 0.27
# A Gaussian profile below this fraction of its own peak is left out of the kernel's window.
_NEGLIGIBLE = 1e-9

VERSIONS = ("v0", "v1", "gauss")


def _one_thread(method):
    """Run a construction step on one torch thread. Its ops are small and memory-bound: a second
    OpenMP thread gains little, and on a shared CPU every op waits for it (measured on this 2-core
    machine under load: the 512×512×5 v0 kernel forward+backward in 182 ms on one thread, 326 ms on two)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with one_torch_thread():
            return method(*args, **kwargs)

    return wrapper


def construct(weight: Tensor, P: Tensor, SIG: Tensor | None, version: str, size: int) -> Tensor:
    """The Dcls2d kernel (out, in/groups, h, w) for ``version`` over a ``size``×``size`` span,
    trimmed to the centred h×w window (h, w odd) its elements reach; differentiable w.r.t.
    weight, P and SIG like dcls's ConstructKernel2d."""
    if version in ("v0", "v1"):
        return _Bilinear.apply(weight, P, version, size)
    if version == "gauss":
        return _Gauss.apply(weight, P, SIG, size)
    raise ValueError(f"DCLS version {version!r} has no lean construction (have {', '.join(VERSIONS)})")


def row_col(P: Tensor, version: str) -> tuple[Tensor, Tensor]:
    """(row, column) offsets from the span centre: v0 stores P[0] as the row (it compares P[0]
    with the row index of its grid), v1/gauss as the column (they subtract P from IDX, whose
    channel 0 is the column index)."""
    return (P[0], P[1]) if version == "v0" else (P[1], P[0])


def _centred_window(reach: Tensor, size: int) -> tuple[int, int]:
    """(first index, length) of the centred window holding taps up to ``reach`` from the centre."""
    half = min(int(reach), size // 2)
    return size // 2 - half, 2 * half + 1


# ---------------------------------------------------------------------------------- v0 and v1


def _bilinear_axis(pos: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Along one axis, for positions ``pos`` in span coordinates (0 = first tap): the lower
    neighbour, the fractional part (weight of the upper neighbour) and where the position lies
    in [−1, size]. Positions further out are moved to −1 or size, where both neighbours fall
    outside the span or carry weight 0, as they do for the far position (its gradient is 0 there too)."""
    kept = (pos >= -1) & (pos <= size)
    pos = pos.clamp(-1, size)
    floor = pos.floor()
    return floor, pos - floor, kept


def _in_span(floor: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Whether the lower and the upper neighbour lie in the span (floor is in [−1, size])."""
    return (floor >= 0) & (floor <= size - 1), floor <= size - 2


class _Bilinear(torch.autograd.Function):
    """v0 / v1: each element's weight scattered onto its 4 integer neighbours (v1 normalised).

    The scatter goes into a scratch window one tap wider than the span where needed, so that
    neighbours outside the span need no masks: the scratch is cropped to the span afterwards (and
    the kernel gradient zero-padded back in backward), which drops them exactly as
    ConstructKernel2d's D×D grid does.
    """

    @staticmethod
    def _geometry(weight: Tensor, P: Tensor, version: str, size: int):
        pairs, count = weight.shape[0] * weight.shape[1], weight.shape[2]
        rows, cols = row_col(P.reshape(2, pairs, count), version)
        return _bilinear_axis(rows + size // 2, size), _bilinear_axis(cols + size // 2, size)

    @staticmethod
    def _norm(row_floor, row_frac, col_floor, col_frac, size: int) -> Tensor:
        """v1's 1 / (Σ taps in the span + eps), the sum being (Σ row weights)(Σ column weights)."""
        sums = []
        for floor, frac in ((row_floor, row_frac), (col_floor, col_frac)):
            lower, upper = _in_span(floor, size)
            sums.append(torch.where(lower, 1 - frac, 0) + torch.where(upper, frac, 0))
        return 1 / (sums[0] * sums[1] + _NORM_EPS)

    @staticmethod
    def _windows(row_floor, row_frac, col_floor, col_frac, version: str, size: int):
        """Half-sizes (rows, columns) of two centred windows: the scratch, which holds both
        neighbours of every element, and the kernel, which holds the neighbours that exist in the
        span and matter — v1's upper neighbour at an integer position has weight 0 and slope 0."""
        if not row_floor.numel():
            return (0, 0), (0, 0)
        centre, bounds = size // 2, []
        for floor, frac in ((row_floor, row_frac), (col_floor, col_frac)):
            upper = floor + 1 if version == "v0" else floor + (frac > 0)
            bounds += [floor.min(), floor.max() + 1, upper.max()]
        low_r, high_r, used_r, low_c, high_c, used_c = (int(v) for v in torch.stack(bounds).tolist())
        scratch = max(centre - low_r, high_r - centre, 0), max(centre - low_c, high_c - centre, 0)
        kernel = tuple(max(centre - max(low, 0), min(used, size - 1) - centre, 0) for low, used in ((low_r, used_r), (low_c, used_c)))
        return scratch, kernel

    @staticmethod
    def _index(row_floor: Tensor, col_floor: Tensor, halves: tuple[int, int], size: int) -> tuple[Tensor, int]:
        """Flat scratch index of each element's upper-left neighbour, and the scratch row length."""
        centre, (half_r, half_c) = size // 2, halves
        width = 2 * half_c + 1
        return ((row_floor + (half_r - centre)) * width + (col_floor + (half_c - centre))).long(), width

    @staticmethod
    @_one_thread
    def forward(ctx, weight: Tensor, P: Tensor, version: str, size: int) -> Tensor:
        out_channels, in_per_group, count = weight.shape
        (row_floor, row_frac, _), (col_floor, col_frac, _) = _Bilinear._geometry(weight, P, version, size)
        halves, kept = _Bilinear._windows(row_floor, row_frac, col_floor, col_frac, version, size)
        corner, width = _Bilinear._index(row_floor, col_floor, halves, size)
        scale = weight.reshape(-1, count)
        if version == "v1":
            scale = scale * _Bilinear._norm(row_floor, row_frac, col_floor, col_frac, size)
        upper_row = scale * row_frac
        lower_row = scale - upper_row  # scale · (1 − row_frac)
        kernel = weight.new_zeros(scale.shape[0], (2 * halves[0] + 1) * width)
        for offset, row_part, col_weight in (
            (0, lower_row, 1 - col_frac),
            (1, lower_row, col_frac),
            (width, upper_row, 1 - col_frac),
            (width + 1, upper_row, col_frac),
        ):
            kernel.scatter_add_(1, corner + offset, row_part * col_weight)
        ctx.save_for_backward(weight, P)
        ctx.version, ctx.size, ctx.halves, ctx.kept = version, size, halves, kept
        kernel = _crop(kernel.view(-1, 2 * halves[0] + 1, width), kept)
        return kernel.reshape(out_channels, in_per_group, *kernel.shape[-2:])

    @staticmethod
    @once_differentiable
    @_one_thread
    def backward(ctx, grad_kernel: Tensor):
        weight, P = ctx.saved_tensors
        version, size, halves = ctx.version, ctx.size, ctx.halves
        count = weight.shape[-1]
        (row_floor, row_frac, row_kept), (col_floor, col_frac, col_kept) = _Bilinear._geometry(weight, P, version, size)
        corner, width = _Bilinear._index(row_floor, col_floor, halves, size)
        flat = weight.reshape(-1, count)
        # The scratch taps outside the span do not exist in the kernel: their gradient is 0.
        grad = _uncrop(grad_kernel.reshape(flat.shape[0], *grad_kernel.shape[-2:]), halves, ctx.kept).flatten(1)
        g00, g01, g10, g11 = (grad.gather(1, corner + offset) for offset in (0, 1, width, width + 1))
        row_low, col_low = 1 - row_frac, 1 - col_frac
        by_row_low, by_row_high = g00 * col_low + g01 * col_frac, g10 * col_low + g11 * col_frac
        by_col_low, by_col_high = g00 * row_low + g10 * row_frac, g01 * row_low + g11 * row_frac
        through = by_row_low * row_low + by_row_high * row_frac  # dL/d(weight · norm)
        scale = flat
        if version == "v1":
            norm = _Bilinear._norm(row_floor, row_frac, col_floor, col_frac, size)
            scale = flat * norm
            grad_weight = through * norm
        else:
            grad_weight = through
        # Neighbours get 1 − frac and frac: slopes −1 and +1 w.r.t. the position.
        grad_rows = scale * (by_row_high - by_row_low)
        grad_cols = scale * (by_col_high - by_col_low)
        if version == "v1":
            grad_sum = -(flat * through) * norm**2
            for axis, (floor, _frac, other_floor, other_frac) in enumerate(
                ((row_floor, row_frac, col_floor, col_frac), (col_floor, col_frac, row_floor, row_frac))
            ):
                lower, upper = _in_span(floor, size)
                other_lower, other_upper = _in_span(other_floor, size)
                other_sum = torch.where(other_lower, 1 - other_frac, 0) + torch.where(other_upper, other_frac, 0)
                slope = upper.to(flat.dtype) - lower.to(flat.dtype)  # d(Σ weights in span)/d position
                term = grad_sum * other_sum * slope
                if axis == 0:
                    grad_rows = grad_rows + term
                else:
                    grad_cols = grad_cols + term
            # The tent relu(1 − |i − p|) has slope 0 at integer positions (abs'(0) = relu'(0) = 0).
            grad_rows = grad_rows * (row_frac > 0)
            grad_cols = grad_cols * (col_frac > 0)
        grad_rows = grad_rows * row_kept
        grad_cols = grad_cols * col_kept
        first, second = (grad_rows, grad_cols) if version == "v0" else (grad_cols, grad_rows)
        grad_P = torch.stack((first, second)).reshape(P.shape)
        return grad_weight.reshape(weight.shape), grad_P, None, None


def _crop(scratch: Tensor, halves: tuple[int, int]) -> Tensor:
    """The centred (2·half + 1)-sized part of a scratch window (…, h, w)."""
    height, width = scratch.shape[-2:]
    top, left = (height - 1) // 2 - halves[0], (width - 1) // 2 - halves[1]
    return scratch[..., top : height - top, left : width - left]


def _uncrop(grad: Tensor, scratch: tuple[int, int], kept: tuple[int, int]) -> Tensor:
    """``grad`` of the cropped kernel zero-padded back to the scratch window."""
    extra_r, extra_c = scratch[0] - kept[0], scratch[1] - kept[1]
    if not (extra_r or extra_c):
        return grad
    return torch.nn.functional.pad(grad, (extra_c, extra_c, extra_r, extra_r))


# ---------------------------------------------------------------------------------------- gauss


def _gauss_axis(pos: Tensor, sig: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Along one axis: the profile exp(−u²/2), u = (i − p) / s, at every tap i of the span
    (…, count, size), u itself, and the width s = |SIG| + 0.27."""
    width = sig.abs() + _SIGMA_FLOOR
    taps = torch.arange(size, dtype=pos.dtype, device=pos.device)
    u = (taps - pos.unsqueeze(-1)) / width.unsqueeze(-1)
    return (-0.5 * u**2).exp(), u, width


class _Gauss(torch.autograd.Function):
    """gauss: exp(−½‖((j − p₀)/s₀, (i − p₁)/s₁)‖²) = row profile ⊗ column profile, normalised."""

    @staticmethod
    def _factors(weight: Tensor, P: Tensor, SIG: Tensor, size: int):
        pairs, count = weight.shape[0] * weight.shape[1], weight.shape[2]
        rows, cols = row_col(P.reshape(2, pairs, count), "gauss")
        row_sig, col_sig = row_col(SIG.reshape(2, pairs, count), "gauss")
        centre = size // 2
        row = _gauss_axis(rows + centre, row_sig, size)
        col = _gauss_axis(cols + centre, col_sig, size)
        norm = 1 / (row[0].sum(-1) * col[0].sum(-1) + _NORM_EPS)
        return row, col, norm, (row_sig, col_sig)

    @staticmethod
    def _window(profile: Tensor, size: int) -> tuple[int, int]:
        if not profile.numel():
            return _centred_window(torch.tensor(0), size)
        peak = profile.amax(-1, keepdim=True)
        used = (profile > _NEGLIGIBLE * peak).flatten(0, -2).any(0)
        reach = (torch.nonzero(used).flatten() - size // 2).abs().max() if bool(used.any()) else torch.tensor(0)
        return _centred_window(reach, size)

    @staticmethod
    @_one_thread
    def forward(ctx, weight: Tensor, P: Tensor, SIG: Tensor, size: int) -> Tensor:
        out_channels, in_per_group, count = weight.shape
        (row, _, _), (col, _, _), norm, _ = _Gauss._factors(weight, P, SIG, size)
        (top, height), (left, width) = window = (_Gauss._window(row, size), _Gauss._window(col, size))
        scale = weight.reshape(-1, count) * norm
        row_part = (row[..., top : top + height] * scale.unsqueeze(-1)).transpose(1, 2)
        kernel = torch.bmm(row_part, col[..., left : left + width])  # Σ_k over elements
        ctx.save_for_backward(weight, P, SIG)
        ctx.size, ctx.window = size, window
        return kernel.view(out_channels, in_per_group, height, width)

    @staticmethod
    @once_differentiable
    @_one_thread
    def backward(ctx, grad_kernel: Tensor):
        weight, P, SIG = ctx.saved_tensors
        (top, height), (left, width) = ctx.window
        (row, row_u, row_s), (col, col_u, col_s), norm, (row_sig, col_sig) = _Gauss._factors(weight, P, SIG, ctx.size)
        flat = weight.reshape(-1, weight.shape[-1])
        grad = grad_kernel.reshape(flat.shape[0], height, width)
        row_win, col_win = row[..., top : top + height], col[..., left : left + width]
        by_row = torch.bmm(col_win, grad.transpose(1, 2))  # (pairs, count, height): Σ_c G[r, c] col[c]
        by_col = torch.bmm(row_win, grad)  # (pairs, count, width): Σ_r row[r] G[r, c]
        through = (by_row * row_win).sum(-1)
        grad_weight = through * norm
        scale = (flat * norm).unsqueeze(-1)
        grad_sum = (-(flat * through) * norm**2).unsqueeze(-1)  # norm = 1 / (Σ row · Σ col + eps)
        grad_row = grad_sum * col.sum(-1, keepdim=True) + torch.zeros_like(row)
        grad_row[..., top : top + height] += scale * by_row
        grad_col = grad_sum * row.sum(-1, keepdim=True) + torch.zeros_like(col)
        grad_col[..., left : left + width] += scale * by_col
        # profile = exp(−u²/2), u = (i − p) / s: d/dp = profile · u / s, d/ds = profile · u² / s.
        row_term, col_term = grad_row * row * row_u, grad_col * col * col_u
        grad_rows = (row_term.sum(-1)) / row_s
        grad_cols = (col_term.sum(-1)) / col_s
        grad_row_sig = (row_term * row_u).sum(-1) / row_s * row_sig.sign()
        grad_col_sig = (col_term * col_u).sum(-1) / col_s * col_sig.sign()
        grad_P = torch.stack((grad_cols, grad_rows)).reshape(P.shape)  # gauss: P[0] is the column
        grad_SIG = torch.stack((grad_col_sig, grad_row_sig)).reshape(SIG.shape)
        return grad_weight.reshape(weight.shape), grad_P, grad_SIG, None


def trim_negligible(kernel: Tensor) -> Tensor:
    """``kernel`` (…, h, w) cropped to the centred window outside which every tap is below 1e-9
    of the largest tap of its own (out, in) slice — exact zeros for v0/v1 elements of weight 0 or
    the far side of an integer position, the Gaussian tails for gauss."""
    height, width = kernel.shape[-2:]
    magnitude = kernel.detach().abs()
    peak = magnitude.amax((-2, -1), keepdim=True)
    used = (magnitude > _NEGLIGIBLE * peak).flatten(0, -3).any(0)
    halves = []
    for axis, extent in ((1, height), (0, width)):
        indices = torch.nonzero(used.any(axis)).flatten()
        halves.append(int((indices - extent // 2).abs().max()) if indices.numel() else 0)
    return _crop(kernel, tuple(halves))

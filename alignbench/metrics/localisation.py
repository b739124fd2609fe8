"""Localisation metrics: does a heatmap point at the object a human boxed?

Pure, batched functions of maps [B, H, W] and boxes; every value is per image, NaN where the
metric is undefined for that image (the scorer counts NaN as skipped). Definitions:

- ``pointing_game``: 1.0 when the map's maximum lies in (or within ``tolerance`` pixels of) a box,
  else 0.0 (Zhang et al., "Top-down neural attention by excitation backprop", IJCV 2018).
- ``stochastic_pointing_game``: the fraction of ``n_points`` pixels, drawn with replacement from
  the map normalised to a distribution, that fall inside a box (Pillai & Pirsiavash, "Explainable
  models with consistent interpretations", AAAI 2021).
- ``energy_in_box``: the share of the map's mass inside the boxes, the "energy-based pointing game"
  of Score-CAM (Wang et al., CVPR-W 2020) that CA-Stream reports, called the "content heatmap" by
  Pillai & Pirsiavash.

Box convention (shared by every function here): ``boxes [B, K, 4]`` holds (x0, y0, x1, y1) in the
map's continuous pixel coordinates, where pixel (row r, column c) covers [c, c+1) x [r, r+1). A
pixel belongs to a box when its centre (c + 0.5, r + 0.5) lies in [x0, x1) x [y0, y1): for integer
boxes that is columns x0 .. x1-1 and rows y0 .. y1-1 (x1, y1 exclusive). ``box_counts [B]`` says how
many rows of ``boxes`` are real; rows past it are padding and ignored. A box is clipped to the map;
a box that covers no pixel centre after clipping (outside the map, zero area, inverted, or with a
non-finite coordinate) is dropped; an image left with no box gives NaN.

Maps: any real values. A map with a non-finite value, or a constant map (no maximum to point at, no
distribution to sample), gives NaN. Malformed arguments (wrong shapes, counts past K) raise
``MetricError``: they are a caller's bug, not a property of one image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from alignbench.errors import MetricError

__all__ = [
    "DEFAULT_N_POINTS",
    "DEFAULT_TOLERANCE",
    "METRIC_FUNCTIONS",
    "box_mask",
    "check_maps",
    "energy_in_box",
    "has_box",
    "map_defined",
    "minmax_normalise",
    "pointing_game",
    "stochastic_pointing_game",
]

# Pointing-game tolerance in pixels: Zhang et al. (2018) count a hit within 15 px of the annotation,
# as TorchRay's PointingGame and the AAAI 2021 paper do.
DEFAULT_TOLERANCE = 15
# Pillai & Pirsiavash (AAAI 2021) draw 100 points per heatmap.
DEFAULT_N_POINTS = 100


# ---------------------------------------------------------------------------------------------
# shared checks and helpers


def check_maps(maps: Tensor, name: str = "maps") -> None:
    """Raise MetricError unless ``maps`` is a real-valued [B, H, W] tensor with H, W >= 1."""
    if not isinstance(maps, Tensor):
        raise MetricError(f"{name} must be a torch.Tensor [B, H, W], got {type(maps).__name__}")
    if maps.dim() != 3 or maps.shape[1] < 1 or maps.shape[2] < 1:
        raise MetricError(f"{name} must have shape [B, H, W] with H, W >= 1, got {list(maps.shape)}")
    if not (maps.is_floating_point() or maps.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise MetricError(f"{name} must be real-valued, got dtype {maps.dtype}")


def _as_real(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    if not flat.is_floating_point() or flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    return flat


def _range(flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row (min, max, defined): one pass, since min and max propagate NaN and inf shows in one of them."""
    if flat.shape[0] == 0:
        empty = flat.new_zeros(0)
        return empty, empty, torch.zeros(0, dtype=torch.bool, device=flat.device)
    lo, hi = torch.aminmax(flat, dim=1)
    return lo, hi, torch.isfinite(lo) & torch.isfinite(hi) & (hi > lo)


def map_defined(maps: Tensor) -> Tensor:
    """[B] bool: the map is finite everywhere and not constant (else every metric here is NaN)."""
    return _range(_as_real(maps))[2]


def minmax_normalise(maps: Tensor) -> tuple[Tensor, Tensor]:
    """(maps min-max normalised to [0, 1] per image, defined [B] bool).

    ``defined`` is False for a map with a non-finite value or a constant map; those rows are zeros.
    The result is float32 (float64 for float64 maps).
    """
    flat = _as_real(maps)
    lo, hi, defined = _range(flat)
    span = torch.where(defined, hi - lo, torch.ones_like(hi))
    normalised = (flat - torch.where(defined, lo, torch.zeros_like(lo))[:, None]) / span[:, None]
    if not bool(defined.all()):
        normalised[~defined] = 0.0
    return normalised.reshape(maps.shape), defined


def _check_boxes(boxes: Tensor, box_counts: Tensor, batch: int | None = None) -> None:
    if not isinstance(boxes, Tensor) or not isinstance(box_counts, Tensor):
        raise MetricError("boxes and box_counts must be torch tensors ([B, K, 4] and [B])")
    if batch is None:
        batch = boxes.shape[0] if boxes.dim() else -1
    if boxes.dim() != 3 or boxes.shape[0] != batch or boxes.shape[2] != 4:
        raise MetricError(f"boxes must have shape [B={batch}, K, 4] (x0, y0, x1, y1), got {list(boxes.shape)}")
    if box_counts.shape != (batch,):
        raise MetricError(f"box_counts must have shape [B={batch}], got {list(box_counts.shape)}")
    if box_counts.is_floating_point() or box_counts.is_complex():
        raise MetricError(f"box_counts must be an integer tensor, got dtype {box_counts.dtype}")
    if batch and (int(box_counts.min()) < 0 or int(box_counts.max()) > boxes.shape[1]):
        raise MetricError(
            f"box_counts must lie in [0, K={boxes.shape[1]}], got values in [{int(box_counts.min())}, {int(box_counts.max())}]"
        )


def _pixel_ranges(boxes: Tensor, box_counts: Tensor, height: int, width: int) -> tuple[Tensor, ...]:
    """Per box the covered columns [c0, c1) and rows [r0, r1) after clipping, and whether it is valid."""
    boxes = boxes.to(torch.float64)
    finite = torch.isfinite(boxes).all(dim=-1)
    # clamp before rounding so that +-inf and huge values cannot overflow the integer conversion
    limit = float(max(height, width) + 1)
    safe = torch.where(finite[..., None], boxes, torch.zeros_like(boxes)).clamp(-limit, limit)
    # pixel c is inside [x0, x1) when c + 0.5 >= x0 and c + 0.5 < x1  <=>  ceil(x0 - .5) <= c < ceil(x1 - .5)
    first = torch.ceil(safe - 0.5).long()
    c0, r0, c1, r1 = first.unbind(dim=-1)
    c0, c1 = c0.clamp(0, width), c1.clamp(0, width)
    r0, r1 = r0.clamp(0, height), r1.clamp(0, height)
    real = torch.arange(boxes.shape[1], device=boxes.device)[None, :] < box_counts.to(boxes.device)[:, None]
    valid = real & finite & (c1 > c0) & (r1 > r0)
    return c0, c1, r0, r1, valid


def box_mask(boxes: Tensor, box_counts: Tensor, height: int, width: int) -> Tensor:
    """The union of each image's valid boxes as a [B, height, width] bool mask (see the module's convention)."""
    _check_boxes(boxes, box_counts)
    c0, c1, r0, r1, valid = _pixel_ranges(boxes, box_counts, height, width)
    cols = torch.arange(width, device=boxes.device)
    rows = torch.arange(height, device=boxes.device)
    in_x = (cols >= c0[..., None]) & (cols < c1[..., None]) & valid[..., None]  # [B, K, W]
    in_y = (rows >= r0[..., None]) & (rows < r1[..., None]) & valid[..., None]  # [B, K, H]
    # union over boxes as one batched product: counts of covering boxes per pixel, exact in float32
    covered = torch.bmm(in_y.transpose(1, 2).float(), in_x.float())
    return covered > 0


def has_box(boxes: Tensor, box_counts: Tensor, height: int, width: int) -> Tensor:
    """[B] bool: the image has at least one box covering a pixel of the [height, width] map.

    The scorer can use it to give "no box inside the image" as the skip reason of a NaN.
    """
    _check_boxes(boxes, box_counts)
    return _pixel_ranges(boxes, box_counts, height, width)[4].any(dim=1)


def _prepare(maps: Tensor, boxes: Tensor, box_counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    check_maps(maps)
    _check_boxes(boxes, box_counts, maps.shape[0])
    return maps, boxes.to(maps.device), box_counts.to(maps.device)


def _nan_where(values: Tensor, defined: Tensor) -> Tensor:
    return torch.where(defined, values, torch.full_like(values, float("nan"))).float()


# ---------------------------------------------------------------------------------------------
# metrics


def pointing_game(maps: Tensor, boxes: Tensor, box_counts: Tensor, *, tolerance: float = DEFAULT_TOLERANCE) -> Tensor:
    """Pointing game per image: 1.0 hit, 0.0 miss, NaN undefined; [B] float32 on the maps' device.

    Hit: some pixel where the map takes its maximum lies inside a box, or at Euclidean distance
    (between pixel centres) strictly less than ``tolerance`` from a pixel inside a box — TorchRay's
    acceptance rule, so ``tolerance=0`` is the strict game. Ties at the maximum: hit if any maximal
    pixel qualifies (as Quantus's PointingGame). NaN: constant or non-finite map, or no valid box.
    """
    maps, boxes, box_counts = _prepare(maps, boxes, box_counts)
    tolerance = float(tolerance)
    if not tolerance >= 0 or tolerance == float("inf"):
        raise MetricError(f"pointing-game tolerance must be a finite number of pixels >= 0, got {tolerance}")
    batch, height, width = maps.shape
    defined = map_defined(maps)
    c0, c1, r0, r1, valid = _pixel_ranges(boxes, box_counts, height, width)
    # only maximal pixels matter (usually one per image): list them, then test each against the boxes
    is_max = (maps == maps.amax(dim=(1, 2), keepdim=True)) & defined[:, None, None]
    b, r, c = is_max.nonzero(as_tuple=True)
    # distance in columns/rows from each maximal pixel to each box's pixel range (0 inside)
    dx = (c0[b] - c[:, None]).clamp(min=0) + (c[:, None] - (c1[b] - 1)).clamp(min=0)  # [M, K]
    dy = (r0[b] - r[:, None]).clamp(min=0) + (r[:, None] - (r1[b] - 1)).clamp(min=0)
    d2 = (dx.square() + dy.square()).double()
    accepted = (valid[b] & ((d2 == 0) | (d2 < tolerance * tolerance))).any(dim=1)
    hit = torch.zeros(batch, dtype=torch.float64, device=maps.device)
    hit.scatter_reduce_(0, b, accepted.double(), reduce="amax")
    return _nan_where(hit, defined & valid.any(dim=1))


def stochastic_pointing_game(
    maps: Tensor,
    boxes: Tensor,
    box_counts: Tensor,
    *,
    n_points: int = DEFAULT_N_POINTS,
    generator: torch.Generator | None = None,
    seeds: Sequence[int] | Tensor | None = None,
) -> Tensor:
    """Fraction of ``n_points`` pixels sampled from the map that land inside a box; [B] float32.

    The map is min-max normalised (so its lowest value carries no mass) and divided by its sum to
    give a distribution over pixels; points are drawn with replacement by inverting its cumulative
    sum with uniform numbers. Randomness: ``seeds`` (one integer per image) gives each image its
    own ``torch.Generator().manual_seed(seed)``, so a value does not depend on batch size or on where
    an interrupted run resumed; otherwise ``generator`` (or torch's global one) draws for the batch.
    NaN: constant or non-finite map, or no valid box.
    """
    maps, boxes, box_counts = _prepare(maps, boxes, box_counts)
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise MetricError(f"stochastic-pointing-game n_points must be a positive integer, got {n_points!r}")
    batch, height, width = maps.shape
    normalised, defined = minmax_normalise(maps)
    cdf = normalised.flatten(1).cumsum(dim=1, dtype=torch.float64)  # last entry > 0 wherever defined
    if seeds is not None:
        seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]
        if len(seeds) != batch:
            raise MetricError(f"stochastic-pointing-game needs one seed per image ({batch}), got {len(seeds)}")
        uniform = (
            torch.stack([torch.rand(n_points, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds])
            if batch
            else torch.empty(0, n_points, dtype=torch.float64)
        )
    else:
        device = generator.device if generator is not None else torch.device("cpu")
        uniform = torch.rand(batch, n_points, generator=generator, dtype=torch.float64, device=device)
    uniform = uniform.to(maps.device)
    # pixel j is drawn when cdf[j-1] <= u * total < cdf[j]: never a pixel of zero mass
    drawn = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).clamp(max=height * width - 1)
    inside = box_mask(boxes, box_counts, height, width).flatten(1)
    fraction = inside.gather(1, drawn).double().mean(dim=1)
    return _nan_where(fraction, defined & has_box(boxes, box_counts, height, width))


def energy_in_box(maps: Tensor, boxes: Tensor, box_counts: Tensor) -> Tensor:
    """Share of the min-max-normalised map's mass inside the boxes (union), in [0, 1]; [B] float32.

    Score-CAM's energy-based pointing game is sum(L inside) / sum(L) on maps that are ReLU'd and
    normalised, whose minimum is 0. Min-max normalising first gives the same number for such maps,
    and keeps a map's floor (e.g. Threshold-Grad-CAM's clamp) from counting as energy everywhere.
    Overlapping boxes count their pixels once. NaN: constant or non-finite map, or no valid box.
    """
    maps, boxes, box_counts = _prepare(maps, boxes, box_counts)
    batch, height, width = maps.shape
    normalised, defined = minmax_normalise(maps)
    inside = box_mask(boxes, box_counts, height, width)
    # float32 sums are pairwise in torch: relative error ~1e-6 on 224 x 224 maps
    total = normalised.flatten(1).sum(dim=1).double()
    mass_inside = (normalised * inside).flatten(1).sum(dim=1).double()
    share = mass_inside / torch.where(defined, total, torch.ones_like(total))
    return _nan_where(share, defined & has_box(boxes, box_counts, height, width))


# ---------------------------------------------------------------------------------------------
# scorer adapters: compute(maps, batch, *, model, explanation) -> Tensor[B]


def _boxes_of(batch: Mapping[str, Any], metric: str) -> tuple[Tensor, Tensor]:
    boxes, counts = batch.get("boxes"), batch.get("box_counts")
    if boxes is None or counts is None:
        raise MetricError(
            f"metric {metric!r} needs bounding boxes, and this dataset has none; use a dataset with boxes (sample, imagenet-val)"
        )
    return boxes, counts


def _pointing_game(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None) -> Tensor:
    return pointing_game(maps, *_boxes_of(batch, "pointing-game"))


def _stochastic_pointing_game(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None) -> Tensor:
    boxes, counts = _boxes_of(batch, "stochastic-pointing-game")
    index = batch.get("index")
    # seeded by the image's dataset index: the same image draws the same points in every run
    if index is not None:
        return stochastic_pointing_game(maps, boxes, counts, seeds=index)
    return stochastic_pointing_game(maps, boxes, counts, generator=torch.Generator().manual_seed(0))


def _energy_in_box(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None) -> Tensor:
    return energy_in_box(maps, *_boxes_of(batch, "energy-in-box"))


METRIC_FUNCTIONS = {
    "pointing-game": _pointing_game,
    "stochastic-pointing-game": _stochastic_pointing_game,
    "energy-in-box": _energy_in_box,
}

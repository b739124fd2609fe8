"""When a map is constant, every metric that needs it to vary is undefined: NaN, with the reason.

A map is constant when its range is within ``CONSTANT_RTOL`` of its magnitude:

    max − min ≤ CONSTANT_RTOL · max(|min|, |max|)      (an all-zero map included)

Why a tolerance, and why 1e-5: preprocessing turns a constant into values that differ in their last
bits. A folder heatmap of 0.5 everywhere, resized with antialiasing to 224×224, became 8 values
1–10 float32 ulps apart, and Spearman ranked that noise (ρ = 0.048 was stored for it). Measured on
constants from 1e-6 to 1e6 resized from 16×16 … 4000×3000 to 224×224 with torch's antialiased and
plain bilinear resize (what the folder and ClickMe pipelines use): the range never exceeded
1.3e-6 of the magnitude (11 ulps, a 4000×3000 image: the filter sums ~18 taps per output pixel, each
adding up to an ulp). 1e-5 (≈ 84 float32 ulps) keeps a margin for filters several times wider. A
real map varies far more: one stored in 8 bits varies by ≥ 1/255 of its maximum, and an explanation
whose whole range is below 1e-5 of its values is below the rounding of its own float32 channel sums
(hundreds of channels), so what it ranks is rounding.

The reference map is also judged on the data as given, before preprocessing: a heatmap file, a
ClickMe record or a box mask that is constant is undefined even where preprocessing made it vary
(the ClickMe blur's zero padding darkens the border of a constant map).

Non-finite maps are undefined too (the metrics already give NaN for them); the reason says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["CONSTANT_RTOL", "constant_map_reason", "mask_undefined", "relative_range"]

CONSTANT_RTOL = 1e-5


def relative_range(maps: Tensor) -> Tensor:
    """float64 [B]: (max − min) / max(|min|, |max|) per map ([B, ...]); 0 for an all-zero map, NaN
    for a map holding NaN or ±inf."""
    flat = maps.reshape(maps.shape[0], -1)
    if not flat.is_floating_point():
        flat = flat.to(torch.float64)
    low, high = torch.aminmax(flat, dim=1)
    low, high = low.double(), high.double()
    magnitude = torch.maximum(low.abs(), high.abs())
    span = high - low
    ratio = torch.where(magnitude > 0, span / torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude)), torch.zeros_like(span))
    finite = torch.isfinite(low) & torch.isfinite(high)
    return torch.where(finite, ratio, torch.full_like(ratio, float("nan")))


def constant_map_reason(maps: Tensor, what: str) -> list[str | None]:
    """Per map, why ``what`` (e.g. "the model's map") makes a metric undefined, or None: it holds NaN
    or ±inf, is constant, or is constant up to rounding (``CONSTANT_RTOL``)."""
    reasons: list[str | None] = []
    for ratio in relative_range(maps).tolist():
        if ratio != ratio:
            reasons.append(f"{what} holds NaN or ±inf values")
        elif ratio == 0.0:
            reasons.append(f"{what} is constant")
        elif ratio <= CONSTANT_RTOL:
            reasons.append(f"{what} is constant up to rounding (its range is {ratio:.1e} of its magnitude, at most {CONSTANT_RTOL:g})")
        else:
            reasons.append(None)
    return reasons


def mask_undefined(values: Mapping[str, Tensor], reasons: Mapping[str, Sequence[str | None]]) -> dict[str, list[str | None]]:
    """Set NaN, in place, each metric's value for every image where a map it needs to vary does not
    (``reasons``: map name → per-image reason or None, the names of ``MetricSpec.needs_variation``);
    returns metric → per-image reason (None where the metric keeps its value)."""
    from alignbench.metrics import metric_spec

    out: dict[str, list[str | None]] = {}
    for metric, value in values.items():
        why: list[str | None] = [None] * value.shape[0]
        for side in metric_spec(metric).needs_variation:
            for i, reason in enumerate(reasons.get(side, ())):
                if reason is not None and why[i] is None:
                    why[i] = reason
        undefined = [i for i, reason in enumerate(why) if reason is not None]
        if undefined:
            value[torch.tensor(undefined, device=value.device)] = float("nan")
        out[metric] = why
    return out

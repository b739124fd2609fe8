"""The metric registry (torch-free): name → what the metric needs and which way is better.

Metric functions are pure and batched (they import torch) and live in their modules; each module's
``METRIC_FUNCTIONS`` maps a registry name to the scorer's adapter ``compute(maps, batch, *, model,
explanation) -> Tensor[B]`` (float64, NaN where the metric is undefined for an image: counted as
skipped, never dropped). ``metric_function(name)`` imports it on first use, so listing and validating
metrics, and reading a cached run, never import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from alignbench.errors import MetricError

__all__ = ["METRICS", "MetricSpec", "metric_function"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    needs_boxes: bool  # the dataset must provide boxes (sample, imagenet-val)
    needs_model: bool  # the metric runs the model again (faithfulness), not just the maps
    description: str
    module: str  # defines METRIC_FUNCTIONS[name]


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            name="spearman",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=False,
            description="Spearman rank correlation of explanation and reference map (average ranks for ties, "
            "= scipy.stats.spearmanr); NaN for a constant or non-finite map",
            module="alignbench.metrics.spearman",
        ),
    )
}


def metric_function(name: str) -> Callable[..., Any]:
    """The scorer's adapter for metric ``name`` (imports its module, hence torch)."""
    spec = METRICS.get(name)
    if spec is None:
        raise MetricError(f"unknown metric {name!r}; available: {', '.join(METRICS)}")
    return import_module(spec.module).METRIC_FUNCTIONS[name]

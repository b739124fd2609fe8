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

__all__ = ["FIXATION_DEFAULT_METRICS", "METRICS", "MetricSpec", "default_metrics", "metric_function", "metric_spec"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    needs_boxes: bool  # the dataset must provide boxes (sample, imagenet-val)
    needs_model: bool  # the metric runs the model again (faithfulness), not just the maps
    description: str
    module: str  # defines METRIC_FUNCTIONS[name]
    params: tuple[str, ...] = ()  # keyword parameters the adapter takes (part of a run's identity)
    # The maps ("model": the explanation, "reference": the human map) the metric is undefined without:
    # one that is constant, in its file or up to rounding (alignbench.metrics.constancy), makes it NaN
    # with the reason stored. Every metric here reads the model's map through its ranks, its maximum,
    # its min-max normalisation or its pixel order, all of which a constant map decides by rounding
    # noise alone; spearman, cc, kl and sim read the reference map (or fixation density) too.
    needs_variation: tuple[str, ...] = ("model",)
    # The metric reads the dataset's reference map (the batch's ``reference`` / ``reference_ranks``):
    # refused on a dataset without reference maps (a folder without heatmaps/). Spearman, cc, kl and
    # sim do; the box metrics read boxes, the faithfulness metrics the model and the image, and the
    # fixation metrics the fixations.
    needs_reference: bool = False
    # The saliency benchmark's metrics (alignbench.metrics.fixation). needs_fixations: the dataset must
    # record eye fixations (``Dataset.has_fixations``; refused elsewhere before a run row exists);
    # needs_density: compared with a continuous map — the fixation density on a fixation dataset,
    # else any dataset's reference map; needs_other_fixations: also reads the other images' fixations
    # (shuffled AUC's negatives).
    needs_fixations: bool = False
    needs_density: bool = False
    needs_other_fixations: bool = False


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
            needs_variation=("model", "reference"),
            needs_reference=True,
        ),
        # The MIT/Tübingen saliency benchmark's metrics against eye fixations, pysaliency's
        # conventions (alignbench.metrics.fixation states each difference from MIT's MATLAB code),
        # at each stimulus's own size: the map upsampled bilinearly.
        MetricSpec(
            name="nss",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=False,
            description="normalised scanpath saliency: the z-scored map (population std) averaged over the fixations",
            module="alignbench.metrics.fixation",
            needs_fixations=True,
        ),
        MetricSpec(
            name="auc-judd",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=False,
            description="AUC, thresholds at the fixated values, negatives the unfixated pixels (exact ties, no jitter)",
            module="alignbench.metrics.fixation",
            needs_fixations=True,
        ),
        MetricSpec(
            name="auc-borji",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=False,
            description="AUC against uniformly drawn pixels, mean of 100 seeded splits (exact ties)",
            module="alignbench.metrics.fixation",
            needs_fixations=True,
        ),
        MetricSpec(
            name="sauc",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=False,
            description="shuffled AUC: negatives are the other images' fixations, rescaled (exact ties)",
            module="alignbench.metrics.fixation",
            needs_fixations=True,
            needs_other_fixations=True,
        ),
        MetricSpec(
            name="cc",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=False,
            description="Pearson correlation with the fixation density (or the reference map); NaN for a constant map",
            module="alignbench.metrics.fixation",
            needs_variation=("model", "reference"),
            needs_reference=True,
            needs_density=True,
        ),
        MetricSpec(
            name="kl",
            higher_is_better=False,
            needs_boxes=False,
            needs_model=False,
            description="KL(density || map) in nats, both read as densities, MIT's eps 2.2204e-16; lower is better",
            module="alignbench.metrics.fixation",
            needs_variation=("model", "reference"),
            needs_reference=True,
            needs_density=True,
        ),
        MetricSpec(
            name="sim",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=False,
            description="similarity: sum of the minima of the map and the density, each normalised to sum 1",
            module="alignbench.metrics.fixation",
            needs_variation=("model", "reference"),
            needs_reference=True,
            needs_density=True,
        ),
        MetricSpec(
            name="ig",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=False,
            description="information gain over the dataset's centre bias, bits per fixation (map read as a density)",
            module="alignbench.metrics.fixation",
            needs_fixations=True,
        ),
        # Localisation against human bounding boxes ("Explainable Models with Consistent
        # Interpretations", AAAI 2021; Score-CAM's energy-based pointing game).
        MetricSpec(
            name="pointing-game",
            higher_is_better=True,
            needs_boxes=True,
            needs_model=False,
            description="1 when the map's maximum lies within 15 px of a box (Zhang et al. 2018), else 0",
            module="alignbench.metrics.localisation",
        ),
        MetricSpec(
            name="stochastic-pointing-game",
            higher_is_better=True,
            needs_boxes=True,
            needs_model=False,
            description="fraction of 100 points sampled from the normalised map that fall inside the boxes",
            module="alignbench.metrics.localisation",
        ),
        MetricSpec(
            name="energy-in-box",
            higher_is_better=True,
            needs_boxes=True,
            needs_model=False,
            description="share of the min-max-normalised map's mass inside the boxes",
            module="alignbench.metrics.localisation",
        ),
        # Faithfulness: does the highlighted region drive the prediction (RISE; Grad-CAM++; Opti-CAM).
        MetricSpec(
            name="deletion",
            params=("steps",),
            higher_is_better=False,
            needs_boxes=False,
            needs_model=True,
            description="RISE deletion AUC: target probability as the most salient pixels are removed (224 steps)",
            module="alignbench.metrics.faithfulness",
        ),
        MetricSpec(
            name="insertion",
            params=("steps",),
            higher_is_better=True,
            needs_boxes=False,
            needs_model=True,
            description="RISE insertion AUC: target probability as the most salient pixels are restored on a blur",
            module="alignbench.metrics.faithfulness",
        ),
        MetricSpec(
            name="average-drop",
            higher_is_better=False,
            needs_boxes=False,
            needs_model=True,
            description="% drop of the target probability on the image masked by the map (Grad-CAM++)",
            module="alignbench.metrics.faithfulness",
        ),
        MetricSpec(
            name="average-increase",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=True,
            description="100 when the masked image raises the target probability, else 0 (Grad-CAM++)",
            module="alignbench.metrics.faithfulness",
        ),
        MetricSpec(
            name="average-gain",
            higher_is_better=True,
            needs_boxes=False,
            needs_model=True,
            description="% gain of the target probability on the masked image, relative to 1 - p (Opti-CAM)",
            module="alignbench.metrics.faithfulness",
        ),
    )
}


def metric_spec(name: str) -> MetricSpec:
    """The registry entry of metric ``name``; MetricError naming the available ones if unknown."""
    spec = METRICS.get(name)
    if spec is None:
        raise MetricError(f"unknown metric {name!r}; available: {', '.join(METRICS)}")
    return spec


def metric_function(name: str) -> Callable[..., Any]:
    """The scorer's adapter for metric ``name`` (imports its module, hence torch)."""
    return import_module(metric_spec(name).module).METRIC_FUNCTIONS[name]


FIXATION_DEFAULT_METRICS: tuple[str, ...] = ("spearman", "nss", "auc-judd", "auc-borji", "sauc", "cc", "kl", "sim", "ig")
"""What ``score`` computes on a fixation dataset when no metric is named: the eight metrics of the saliency
benchmark and Spearman (at the stimulus size, against the fixation density)."""


def default_metrics(dataset: Any) -> tuple[str, ...]:
    """The metrics ``score`` computes on ``dataset`` when none is named: all the fixation metrics and
    Spearman on a fixation dataset, Spearman elsewhere."""
    return FIXATION_DEFAULT_METRICS if getattr(dataset, "has_fixations", False) else ("spearman",)

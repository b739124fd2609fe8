"""The scorer's adapters of the fixation metrics (METRIC_FUNCTIONS), on hand-made batches laid out as
the fixation datasets' contract says (helpers' CONTRACT22: ``stimulus_size``, ``fixations``,
``density``, ``baseline``, ``other_fixations`` as per-image lists; maps at the model input size).

Each adapter must equal the pure function applied to the map upsampled to the stimulus size
(bilinear, align_corners=False), computed here independently; the values are the same float64
operations on the same float32 upsampled map, so they agree to the last bits (1e-12).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignbench.metrics import METRICS, default_metrics, metric_function
from alignbench.metrics import fixation as fx
from alignbench.metrics.spearman import spearman

FIXATION_METRICS = ("nss", "auc-judd", "auc-borji", "sauc", "cc", "kl", "sim", "ig")
SIZES = [(37, 53), (24, 24), (61, 29)]  # stimulus (height, width): up, equal to and across the 24×24 input


def _density(rng, size):
    d = rng.random(size).astype(np.float32) ** 4
    return d / d.sum()


def fixation_batch(seed: int = 0, empty: int | None = None):
    rng = np.random.default_rng(seed)
    maps = torch.rand(len(SIZES), 24, 24, generator=torch.Generator().manual_seed(seed))
    fixations = []
    for k, (h, w) in enumerate(SIZES):
        n = 0 if k == empty else 9
        fixations.append(np.stack([rng.uniform(-0.5, w - 0.5, n), rng.uniform(-0.5, h - 0.5, n)], axis=1))
    return maps, {
        "stimulus_size": list(SIZES),
        "fixations": fixations,
        "density": [_density(rng, size) for size in SIZES],
        "baseline": [_density(rng, size) for size in SIZES],
        "other_fixations": [np.stack([rng.uniform(0, w, 40), rng.uniform(0, h, 40)], axis=1) for h, w in SIZES],
        "reference": torch.rand(len(SIZES), 24, 24),
    }


def expected(metric: str, up: np.ndarray, batch: dict, i: int) -> float:
    xs, ys = batch["fixations"][i][:, 0], batch["fixations"][i][:, 1]
    if len(xs) == 0:
        return math.nan
    other = batch["other_fixations"][i]
    return {
        "nss": lambda: fx.nss(up, xs, ys),
        "auc-judd": lambda: fx.auc_judd(up, xs, ys),
        "auc-borji": lambda: fx.auc_borji(up, xs, ys),
        "sauc": lambda: fx.sauc(up, xs, ys, other[:, 0], other[:, 1]),
        "cc": lambda: fx.cc(up, batch["density"][i]),
        "kl": lambda: fx.kl(up, batch["density"][i]),
        "sim": lambda: fx.sim(up, batch["density"][i]),
        "ig": lambda: fx.information_gain(up, batch["baseline"][i], xs, ys),
    }[metric]()


@pytest.mark.parametrize("metric", FIXATION_METRICS)
def test_adapters_score_the_map_upsampled_to_the_stimulus_size(metric: str) -> None:
    maps, batch = fixation_batch(empty=1)
    values = metric_function(metric)(maps, batch, model=None, explanation=None)
    assert values.dtype == torch.float64 and values.shape == (len(SIZES),)
    for i, size in enumerate(SIZES):
        up = F.interpolate(maps[i][None, None], size=size, mode="bilinear", align_corners=False)[0, 0].double().numpy()
        want = expected(metric, up, batch, i)
        if math.isnan(want):
            assert values[i].isnan()
        else:
            assert float(values[i]) == pytest.approx(want, abs=1e-12)


def test_the_upsampling_is_done_once_per_batch_and_is_the_stimulus_size() -> None:
    maps, batch = fixation_batch()
    for metric in FIXATION_METRICS:
        metric_function(metric)(maps, batch)
    cached = batch["_stimulus_maps"]
    assert cached.maps is maps
    assert [tuple(cached.float32(i).shape) for i in range(len(SIZES))] == SIZES


def test_density_metrics_read_the_reference_map_on_a_dataset_without_fixations() -> None:
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(3))
    reference = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(4))
    batch = {"reference": reference}
    for metric, function in (("cc", fx.cc), ("kl", fx.kl), ("sim", fx.sim)):
        values = metric_function(metric)(maps, batch)
        assert values.tolist() == pytest.approx([function(maps[i], reference[i]) for i in range(2)], abs=1e-12)


def test_spearman_on_a_fixation_dataset_is_at_the_stimulus_size_against_the_density() -> None:
    maps, batch = fixation_batch(empty=2)
    batch["reference_ranks"] = torch.zeros(3, 24 * 24)  # present, but not what a fixation batch is scored against
    values = metric_function("spearman")(maps, batch)
    for i, size in enumerate(SIZES[:2]):
        up = F.interpolate(maps[i][None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        assert float(values[i]) == pytest.approx(float(spearman(up[None], torch.from_numpy(batch["density"][i])[None])), abs=1e-12)
    assert values[2].isnan()  # no fixations, no density


def test_registry_metadata() -> None:
    assert not METRICS["kl"].higher_is_better
    assert all(METRICS[m].higher_is_better for m in FIXATION_METRICS if m != "kl")
    assert {m for m in FIXATION_METRICS if METRICS[m].needs_fixations} == {"nss", "auc-judd", "auc-borji", "sauc", "ig"}
    assert {m for m in FIXATION_METRICS if METRICS[m].needs_density} == {"cc", "kl", "sim"}
    assert {m for m in METRICS if METRICS[m].needs_other_fixations} == {"sauc"}

    class Fixated:
        has_fixations = True

    assert default_metrics(Fixated()) == ("spearman", *FIXATION_METRICS)
    assert default_metrics(object()) == ("spearman",)

"""Faithfulness metrics on tiny hand-built models whose probabilities, curves and AUCs are known by hand.

``RemainingWeight``: for pixels x in [0, 1] and weights w summing to 1, p(class 0 | x) = w . x, so on
an image of ones every point of a deletion/insertion curve towards zeros is a sum of weights.
``WeightedShares``: p(class 0 | x) = w . x / (w . x + v . x), to make masking raise or lower it.
Plus one small conv net checked against RISE's one-pass-per-step loop.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alignbench.errors import MetricError
from alignbench.metrics.faithfulness import (
    METRIC_FUNCTIONS,
    average_drop,
    average_gain,
    average_increase,
    blur,
    causal_curve,
    confidence_change,
    deletion_auc,
    insertion_auc,
)
from alignbench.testing.tolerance import float32_bound, float32_relative

NAN = float("nan")


class WeightedShares(nn.Module):
    """logits = log(w . x), log(v . x) on channel 0, so that softmax gives p0 = w.x / (w.x + v.x)."""

    def __init__(self, w: list[float], v: list[float]):
        super().__init__()
        self.register_buffer("w", torch.tensor(w, dtype=torch.float64))
        self.register_buffer("v", torch.tensor(v, dtype=torch.float64))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        s = x[:, 0].flatten(1).double()
        return torch.stack([torch.log(s @ self.w), torch.log(s @ self.v)], dim=1)


def ones(n: int = 1, side: int = 2) -> torch.Tensor:
    return torch.ones(n, 3, side, side)


def maps_of(*rows: list[float], side: int = 2) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), side, side)


def same(a: torch.Tensor, b: list[float], atol: float = 1e-6) -> bool:
    # known answers of O(1) from inputs rounded once to float32 (weights, maps), the rest float64:
    # a few u = EPS/2 of them; 1e-6 ≈ 8·EPS, far below any wrong step (≥ 1/steps of the curve)
    return torch.allclose(a.double().cpu(), torch.tensor(b, dtype=torch.float64), equal_nan=True, atol=atol)


class RemainingWeight(nn.Module):
    """p0 = sum_p w_p x_p for x in [0, 1] and sum w = 1: logits log(w . x), log(w . (1 - x))."""

    def __init__(self, w: list[float]):
        super().__init__()
        self.register_buffer("w", torch.tensor(w, dtype=torch.float64))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        s = x[:, 0].flatten(1).double()
        return torch.stack([torch.log(s @ self.w), torch.log((1 - s) @ self.w)], dim=1)


W4 = [0.4, 0.3, 0.2, 0.1]


@pytest.fixture
def model() -> RemainingWeight:
    return RemainingWeight(W4).eval()


# ------------------------------------------------------------------ deletion / insertion


def test_deletion_curve_and_auc_by_hand(model):
    images, targets = ones(2), torch.tensor([0, 0])
    maps = maps_of(W4, W4[::-1])  # the true order, and its reverse
    fractions, curve = causal_curve(model, images, maps, targets, mode="deletion", steps=4)
    assert same(fractions, [0, 0.25, 0.5, 0.75, 1])
    assert same(curve[0], [1.0, 0.6, 0.3, 0.1, 0.0])  # the most important pixel first
    assert same(curve[1], [1.0, 0.9, 0.7, 0.4, 0.0])
    # trapezoids: 0.25 * (0.8 + 0.45 + 0.2 + 0.05) and 0.25 * (0.95 + 0.8 + 0.55 + 0.2)
    assert same(deletion_auc(model, images, maps, targets, steps=4), [0.375, 0.625])
    # two pixels per step: points 1, 0.3, 0 and 1, 0.7, 0
    assert same(deletion_auc(model, images, maps, targets, steps=2), [0.4, 0.6])


def test_insertion_auc_by_hand(model):
    images, targets = ones(2), torch.tensor([0, 0])
    maps = maps_of(W4, W4[::-1])
    _, curve = causal_curve(model, images, maps, targets, mode="insertion", steps=4, baseline="zeros")
    assert same(curve[0], [0.0, 0.4, 0.7, 0.9, 1.0])
    assert same(insertion_auc(model, images, maps, targets, steps=4, baseline="zeros"), [0.625, 0.375])
    # p1 = 1 - p0, so class 1's AUC is 1 - class 0's
    assert same(insertion_auc(model, images, maps, torch.tensor([1, 1]), steps=4, baseline="zeros"), [0.375, 0.625])


def test_uneven_steps_use_the_exact_fraction_of_pixels_changed():
    # 3 x 3 image, 4 steps: floor(i * 9 / 4) = 0, 2, 4, 6, 9 pixels deleted
    w = [0.3, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]
    model = RemainingWeight(w).eval()
    fractions, curve = causal_curve(model, ones(1, 3), maps_of(w, side=3), torch.tensor([0]), mode="deletion", steps=4)
    assert same(fractions, [0, 2 / 9, 4 / 9, 6 / 9, 1])
    assert same(curve[0], [1.0, 0.5, 0.3, 0.15, 0.0])
    expected = (2 / 9) * (1.5 / 2 + 0.8 / 2) + (2 / 9) * (0.45 / 2) + (3 / 9) * (0.15 / 2)
    assert same(deletion_auc(model, ones(1, 3), maps_of(w, side=3), torch.tensor([0]), steps=4), [expected])


def test_ties_are_broken_in_raster_order(model):
    # equal saliency everywhere but one pixel: pixel 3 first, then 0, 1, 2
    maps = maps_of([0.0, 0.0, 0.0, 1.0])
    _, curve = causal_curve(model, ones(), maps, torch.tensor([0]), mode="deletion", steps=4)
    assert same(curve[0], [1.0, 0.9, 0.5, 0.2, 0.0])


def test_all_steps_of_several_images_share_few_forward_passes(model):
    images, targets = ones(3), torch.tensor([0, 0, 0])
    maps = maps_of(W4, W4[::-1], [0.1, 0.4, 0.3, 0.2])
    model.calls.clear()
    batched = deletion_auc(model, images, maps, targets, steps=4, batch_size=8)
    assert model.calls == [8, 7]  # 3 images x 5 steps = 15 inputs in two passes
    single = deletion_auc(model, images, maps, targets, steps=4, batch_size=1)
    assert torch.equal(batched, single)


def test_undefined_maps_are_nan_and_cost_nothing(model):
    maps = maps_of(W4, [0.5] * 4, [NAN, 1, 2, 3])
    images = ones(3)
    images[0, 1, 0, 0] = 5.0  # other channels are the model's business, not the metric's
    model.calls.clear()
    auc = deletion_auc(model, images, maps, torch.tensor([0, 0, 0]), steps=4)
    assert same(auc, [0.375, NAN, NAN])
    assert sum(model.calls) == 5  # only the defined image went through the model


def test_blur_baseline_is_rises_kernel():
    import numpy as np
    from scipy.ndimage import gaussian_filter

    delta = torch.zeros(1, 3, 21, 21)
    delta[0, :, 10, 10] = 1.0
    blurred = blur(delta)
    impulse = np.zeros((11, 11))
    impulse[5, 5] = 1
    kernel = torch.from_numpy(gaussian_filter(impulse, 5)).float()
    # a delta through RISE's 11×11 kernel: one float32 rounding of each entry, two 11-tap sums if separable
    assert torch.allclose(blurred[0, 1, 5:16, 5:16], kernel, rtol=0, atol=float32_bound(2 * 11 + 4, float(kernel.max())))
    # the kernel sums to 1 (reflect mode keeps the mass): 121 entries each rounded once, summed in float32
    assert abs(float(blurred[0, 0].sum()) - 1.0) < float32_relative(2 * 121 + 4)  # was 1e-5, under 121·EPS
    # insertion from the blurred image: at step 0 the model sees the blur, at the end the image
    model = RemainingWeight([0.25] * 4).eval()
    image = torch.rand(1, 3, 2, 2) * 0.5 + 0.25
    _, curve = causal_curve(model, image, maps_of(W4), torch.tensor([0]), mode="insertion", steps=4)
    assert same(curve[:, -1], [float(image[0, 0].mean())])
    assert same(curve[:, 0], [float(blur(image)[0, 0].mean())])


# ------------------------------------------------------------------ average drop / increase / gain


@pytest.fixture
def evidence() -> WeightedShares:
    # class 0 lives in pixels 0, 1; class 1 in pixels 2, 3: on ones, y = p0 = 0.5
    return WeightedShares([0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]).eval()


def test_drop_increase_gain_by_hand(evidence):
    maps = maps_of(
        [1, 1, 0, 0],  # keeps class 0's evidence only: o = 1
        [1, 0.5, 0.5, 0],  # o = 0.75 / (0.75 + 0.25)
        [0, 0, 1, 1],  # keeps class 1's only: o = 0
        [0, 1, 1, 0],  # o = 0.5 = y
        [2, 2, 1, 1],  # min-max normalised first: same as the first
    )
    images, targets = ones(5), torch.zeros(5, dtype=torch.long)
    y, o = confidence_change(evidence, images, maps, targets)
    assert same(y, [0.5] * 5) and same(o, [1.0, 0.75, 0.0, 0.5, 1.0])
    assert same(average_drop(evidence, images, maps, targets), [0, 0, 100, 0, 0])
    assert same(average_increase(evidence, images, maps, targets), [100, 100, 0, 0, 100])
    assert same(average_gain(evidence, images, maps, targets), [100, 50, 0, 0, 100])


def test_gain_when_the_model_is_already_certain_and_nans(evidence):
    images = ones(3)
    images[1, 0, 1, 1] = float("nan")
    maps = maps_of([1, 1, 0, 0], [1, 1, 0, 0], [0.3] * 4)
    certain = WeightedShares([0.5, 0.5, 0, 0], [0, 0, 0, 0.0]).eval()  # v . x = 0: p0 = 1 exactly
    targets = torch.zeros(3, dtype=torch.long)
    assert same(average_gain(certain, images, maps, targets), [0, NAN, NAN])
    assert same(average_drop(certain, images, maps, targets), [0, NAN, NAN])
    assert same(average_increase(certain, images, maps, targets), [0, NAN, NAN])


def test_baselines_and_given_logits(evidence):
    images, targets = ones(1) * 2, torch.tensor([0])
    maps = maps_of([1, 1, 0, 0])
    # a baseline of 1 (normalised units): masked = 1 + m * (2 - 1) = [2, 2, 1, 1]: o = 4 / 6
    _, o = confidence_change(evidence, images, maps, targets, baseline=1.0)
    assert same(o, [4 / 6])
    _, o_tensor = confidence_change(evidence, images, maps, targets, baseline=torch.ones(3, 1, 1))
    assert torch.equal(o, o_tensor)
    evidence.calls.clear()
    y, _ = confidence_change(evidence, images, maps, targets, logits=torch.tensor([[0.0, 1.0]]))
    assert same(y, [1 / (1 + torch.e)]) and evidence.calls == [1]  # y from the logits: one pass only


def test_adapters_share_one_masked_pass(evidence):
    from types import SimpleNamespace

    images, maps = ones(2), maps_of([1, 1, 0, 0], [0, 0, 1, 1])
    explanation = SimpleNamespace(targets=torch.tensor([0, 0]), logits=torch.zeros(2, 2))  # y = 0.5
    batch = {"image": images, "label": torch.tensor([0, 0])}
    evidence.calls.clear()
    drop = METRIC_FUNCTIONS["average-drop"](maps, batch, model=evidence, explanation=explanation)
    gain = METRIC_FUNCTIONS["average-gain"](maps, batch, model=evidence, explanation=explanation)
    increase = METRIC_FUNCTIONS["average-increase"](maps, batch, model=evidence, explanation=explanation)
    assert evidence.calls == [2]
    assert same(drop, [0, 100]) and same(gain, [100, 0]) and same(increase, [100, 0])
    model = RemainingWeight(W4).eval()
    explanation = SimpleNamespace(targets=torch.tensor([0]), logits=None)
    auc = METRIC_FUNCTIONS["deletion"](maps_of(W4), {"image": ones()}, model=model, explanation=explanation)
    assert auc.shape == (1,) and 0 <= float(auc) <= 1
    with pytest.raises(MetricError, match="needs the model"):
        METRIC_FUNCTIONS["insertion"](maps, batch, model=None, explanation=explanation)


# ------------------------------------------------------------------ a real network: batched == one pass per step


def test_batched_deletion_equals_a_pass_per_step_on_a_conv_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5))
    net.eval()
    images, maps, targets = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8), torch.tensor([1, 3])
    fractions, curve = causal_curve(net, images, maps, targets, mode="deletion", steps=16, batch_size=7)
    # other batches, so other summation orders: a logit sums 27 + 1 conv, 16 pooled and 16 + 1 linear
    # terms, within float32_bound of their magnitude (the net on |x| with |W|, |b|); a softmax
    # probability moves by ≤ 2·that; the AUC (trapezoid weights summing to 1) too, plus its 2·17 roundings
    conv, linear = net[0], net[4]
    with torch.no_grad():
        pooled = nn.functional.adaptive_avg_pool2d(nn.functional.conv2d(images.abs(), conv.weight.abs(), conv.bias.abs(), padding=1), 2)
        magnitude = float((pooled.flatten(1) @ linear.weight.abs().T + linear.bias.abs()).max())
    p_atol = 2 * float32_bound(28 + 16 + 17 + 8, magnitude)  # was 1e-6, tuned
    auc_atol = p_atol + float32_relative(2 * 17)
    # RISE's single_run: one forward pass per step, pixels replaced by the baseline in saliency order
    for b in range(2):
        x = images[b : b + 1].clone()
        order = maps[b].flatten().argsort(descending=True, stable=True)
        for i in range(17):
            with torch.no_grad():
                p = net(x).double().softmax(1)[0, targets[b]]
            assert abs(float(p) - float(curve[b, i])) <= p_atol
            x.view(1, 3, -1)[:, :, order[i * 4 : (i + 1) * 4]] = 0.0
        assert abs(float(deletion_auc(net, images, maps, targets, steps=16)[b]) - float(torch.trapezoid(curve[b], fractions))) <= auc_atol


# ------------------------------------------------------------------ bad input


def test_bad_input_raises_one_clear_metric_error(model):
    images, maps, targets = ones(2), maps_of(W4, W4), torch.tensor([0, 0])
    cases = [
        dict(images=images[0]),  # no batch dimension
        dict(maps=maps_of(W4)),  # batch mismatch
        dict(maps=torch.rand(2, 3, 3)),  # size mismatch
        dict(targets=torch.tensor([0.0, 0.0])),  # float targets
        dict(targets=torch.tensor([0, 7])),  # outside the model's 2 classes
        dict(targets=torch.tensor([0, -1])),
        dict(steps=0),
        dict(steps=5),  # more steps than pixels
        dict(baseline="noise"),
        dict(baseline=torch.zeros(5)),
        dict(batch_size=0),
    ]
    for case in cases:
        args = dict(images=images, maps=maps, targets=targets)
        options = {k: case.pop(k) for k in list(case) if k in ("steps", "baseline", "batch_size")}
        args.update(case)
        with pytest.raises(MetricError) as err:
            deletion_auc(model, args["images"], args["maps"], args["targets"], **options)
        assert "\n" not in str(err.value), case
    with pytest.raises(MetricError, match="model.eval"):
        average_drop(RemainingWeight(W4).train(), images, maps, targets)

"""Input attributions from captum: each equals captum's own attribution reduced the documented way."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from torch import nn

from alignbench.errors import ExplainerError
from alignbench.explainers import METHODS, check_applicable, explain, explain_batch, explainer_setting
from alignbench.explainers._captum import ROWS, blurred
from alignbench.testing.tolerance import float32_bound, network_relative

SIZE = 32
TARGETS = [1, 7]
ATTRIBUTIONS = [name for name, spec in METHODS.items() if spec.kind == "attribution"]
CHEAP = {"integrated-gradients": {"ig_steps": 5}, "smoothgrad": {"samples": 3}}  # what the tests run: a few samples


def tiny(name: str = "test_resnet") -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def frozen(model: nn.Module) -> nn.Module:
    """As explain runs it: eval mode, no parameter requiring grad (the same autograd graph, so the
    same kernels: captum's attribution and ours are then equal to the bit)."""
    return model.eval().requires_grad_(False)


def captum_reference(model, images, name, params):
    """captum's own attribution on the model, reduced as the module docstring of _captum says."""
    t = torch.tensor(TARGETS)
    model = frozen(model)
    try:
        if name == "saliency":
            return Saliency(model).attribute(images, target=t, abs=True).amax(1)  # max over colour channels of |grad|
        if name == "input-x-gradient":
            return InputXGradient(model).attribute(images, target=t).sum(1).abs()
        if name == "integrated-gradients":
            # black: pixel 0 through the model's normalisation (timm's config of the model: 0.5 / 0.5 for test models)
            mean, std = torch.tensor(model.pretrained_cfg["mean"]), torch.tensor(model.pretrained_cfg["std"])
            black = (-mean / std).view(1, 3, 1, 1).expand_as(images)
            rows = images.shape[0] * (ROWS // images.shape[0])
            attr = IntegratedGradients(model).attribute(
                images, baselines=black, target=t, n_steps=params["ig_steps"], internal_batch_size=rows
            )
            return attr.sum(1).abs()
        if name == "smoothgrad":
            maps = []
            for i in range(images.shape[0]):
                image = images[i : i + 1]
                torch.manual_seed(params["seed"])
                attr = NoiseTunnel(Saliency(model)).attribute(
                    image,
                    nt_type="smoothgrad",
                    nt_samples=params["samples"],
                    nt_samples_batch_size=ROWS,
                    stdevs=float(params["noise"] * (image.max() - image.min())),
                    target=t[i : i + 1],
                    abs=False,
                )
                maps.append(attr.abs().sum(1))
            return torch.cat(maps)
        if name == "guided-backprop":
            return GuidedBackprop(model).attribute(images, target=t).sum(1).abs()
        if name == "occlusion":
            window, stride = params["window"], params["stride"]
            per_eval = ROWS // images.shape[0]
            attr = Occlusion(model).attribute(
                images,
                sliding_window_shapes=(3, window, window),
                strides=(3, stride, stride),
                baselines=0,
                target=t,
                perturbations_per_eval=per_eval,
            )
            assert torch.equal(attr[:, 0], attr[:, 1]) and torch.equal(attr[:, 0], attr[:, 2])  # one window over all channels
            return attr[:, 0]
    finally:
        model.requires_grad_(True)
    raise AssertionError(name)


@pytest.mark.parametrize("name", ATTRIBUTIONS)
def test_each_attribution_is_captums_reduced_the_documented_way(name, model, images):
    _, params = explainer_setting(name, **CHEAP.get(name, {}))
    expected = captum_reference(model, images, name, params)
    result = explain_batch(model, images, TARGETS, name, **params)
    assert result.maps.shape == (2, SIZE, SIZE) and result.maps.dtype == torch.float32
    assert result.targets.tolist() == TARGETS
    with torch.no_grad():  # the logits of the images themselves (taken from captum's own call where it makes one)
        logits = model(images)
    assert torch.allclose(result.logits, logits, rtol=0, atol=network_relative(model) * float(logits.abs().max()))
    if name == "occlusion":
        # each value is a difference of two forward passes' logits averaged over windows; the passes batch
        # the perturbed images in other groups than captum's own call, and a multi-threaded kernel may
        # then sum in another order: two forwards' rounding (relative to the largest logit)
        atol = 2 * network_relative(model) * float(logits.abs().max())
        assert torch.allclose(result.maps, expected, rtol=0, atol=atol)
    else:
        # the same captum code on the same model, inputs and targets, the same float32 operations in the same order
        assert torch.equal(result.maps, expected)
    assert all(p.grad is None for p in model.parameters()) and all(p.requires_grad for p in model.parameters())
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()) == 0


def test_saliency_is_harmonizations_map(model, images):
    """Harmonization / Xplique's evaluation map, written without captum: max_c |d logit_t / dx_c|."""
    x = images.clone().requires_grad_(True)
    logits = frozen(model)(x)
    (grad,) = torch.autograd.grad(logits.gather(1, torch.tensor(TARGETS)[:, None]).sum(), x)
    model.requires_grad_(True)
    expected = grad.abs().amax(1)
    ours = explain(model, images, TARGETS, "saliency")
    # the same backward, possibly seeded as one-hot rows instead of a gather: one gradient's rounding
    atol = network_relative(model, passes=2) * float(expected.abs().max())
    assert torch.allclose(ours, expected, rtol=0, atol=atol)


def test_the_default_target_is_the_top1_logit(model, images):
    for name in ATTRIBUTIONS:
        result = explain_batch(model, images, None, name, **CHEAP.get(name, {}))
        assert torch.equal(result.targets, result.logits.argmax(1)), name
        assert result.maps.shape == (2, SIZE, SIZE), name


def test_maps_are_in_the_input_geometry_on_a_vit():
    vit = tiny("test_vit")
    wide = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    for name in ATTRIBUTIONS:
        if name == "guided-backprop":
            continue  # refused on a model without nn.ReLU (below)
        assert explain(vit, wide, None, name, **CHEAP.get(name, {})).shape == (2, 32, 48), name


# ------------------------------------------------------------------ known answers on a linear model


class Linear(nn.Module):
    """logit = W·x + b over the flattened [3, 4, 4] image: every attribution is computable by hand."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(2, 48, generator=torch.Generator().manual_seed(5)))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_known_answers_on_a_linear_model():
    model = Linear()
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    w = model.fc.weight[1].detach().view(3, 4, 4)
    atol = float32_bound(48 + 8, float((w * x[0]).abs().sum()))
    assert torch.allclose(explain(model, x, 1, "saliency")[0], w.abs().amax(0), rtol=0, atol=0)
    assert torch.allclose(explain(model, x, 1, "input-x-gradient")[0], (w * x[0]).sum(0).abs(), rtol=0, atol=atol)
    # integrated gradients of a linear function is exact: (x - baseline)·w, whatever the steps; a
    # model without a pretrained config is normalised with timm's ImageNet defaults
    black = -torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    expected = ((x[0] - black) * w).sum(0).abs()
    bound = float32_bound(48 + 8, float(((x[0] - black) * w).abs().sum())) + float32_bound(7, float(expected.max()))
    assert torch.allclose(explain(model, x, 1, "integrated-gradients", ig_steps=7)[0], expected, rtol=0, atol=bound)
    # occlusion with non-overlapping 2x2 windows: each pixel gets its own window's Σ w·x (setting it to 0 removes it)
    window_sums = (w * x[0]).sum(0).view(2, 2, 2, 2).sum((1, 3))  # [row window, column window]
    expected = window_sums.repeat_interleave(2, 0).repeat_interleave(2, 1)
    ours = explain(model, x, 1, "occlusion", window=2, stride=2)[0]
    assert torch.allclose(ours, expected, rtol=0, atol=atol)


def test_blurred_baseline_is_the_documented_gaussian(images):
    """sigma = 0.05 of the shorter side, radius ⌈3σ⌉, reflect padding, a normalised separable kernel."""
    sigma = 0.05 * SIZE
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = nn.functional.pad(images, (radius,) * 4, mode="reflect")
    rows = nn.functional.conv2d(padded, kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    expected = nn.functional.conv2d(rows, kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    # two passes of 2r + 1 products of weights summing to 1
    atol = float32_bound(2 * (2 * radius + 1) + 8, float(images.abs().max()))
    assert torch.allclose(blurred(images), expected, rtol=0, atol=atol)
    model = tiny()
    _, params = explainer_setting("integrated-gradients", ig_steps=4, baseline="blurred")
    t = torch.tensor(TARGETS)
    attr = IntegratedGradients(frozen(model)).attribute(images, baselines=blurred(images), target=t, n_steps=4, internal_batch_size=ROWS)
    model.requires_grad_(True)
    assert torch.equal(explain(model, images, TARGETS, "integrated-gradients", **params), attr.sum(1).abs())
    assert not torch.equal(explain(model, images, TARGETS, "integrated-gradients", ig_steps=4), attr.sum(1).abs())


# ------------------------------------------------------------------ batching


def test_samples_are_batched_one_forward_per_chunk(model, images):
    """Integrated gradients and smoothgrad run ROWS rows per forward/backward, not one per sample."""
    calls: list[int] = []
    handle = model.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))
    try:
        explain(model, images, TARGETS, "integrated-gradients", ig_steps=20)
        # one forward for the logits, then 20 steps × 2 images in chunks of ROWS rows
        assert calls == [2] + [ROWS] * (40 // ROWS) + ([40 % ROWS] if 40 % ROWS else [])
        calls.clear()
        explain(model, images, TARGETS, "smoothgrad", samples=20)
        per_image = [ROWS] * (20 // ROWS) + ([20 % ROWS] if 20 % ROWS else [])
        assert calls == [2] + per_image * 2
    finally:
        handle.remove()


def test_smoothgrad_is_seeded_and_each_map_depends_on_its_image_alone(model, images):
    first = explain(model, images, TARGETS, "smoothgrad", samples=3)
    assert torch.equal(explain(model, images, TARGETS, "smoothgrad", samples=3), first)
    assert torch.equal(explain(model, images[1:], TARGETS[1:], "smoothgrad", samples=3)[0], first[1])
    assert not torch.equal(explain(model, images, TARGETS, "smoothgrad", samples=3, seed=1), first)
    state = torch.random.get_rng_state()
    explain(model, images, TARGETS, "smoothgrad", samples=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    _, params = explainer_setting("smoothgrad", samples=3)
    assert params == {"samples": 3, "noise": 0.15, "seed": 0}  # part of the explainer setting, hence the run key


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "method, params, fragment",
    [
        ("integrated-gradients", {"ig_steps": 0}, "ig_steps must be in [1, inf)"),
        ("integrated-gradients", {"ig_steps": -3}, "ig_steps must be in [1, inf)"),
        ("integrated-gradients", {"baseline": "white"}, "baseline must be one of black, blurred"),
        ("smoothgrad", {"noise": -0.1}, "noise must be in [0, inf)"),
        ("smoothgrad", {"samples": 0}, "samples must be in [1, inf)"),
        ("occlusion", {"window": 0}, "window must be in [1, inf)"),
        ("occlusion", {"window": 40}, "occlusion window 40 is larger than the image (32x32); use --window 32 or less"),
        ("occlusion", {"window": 8, "stride": 9}, "occlusion stride 9 is larger than the window 8"),
        ("saliency", {"ig_steps": 3}, "explainer 'saliency' takes no parameter 'ig_steps'"),
    ],
)
def test_bad_parameters_are_one_line(model, images, method, params, fragment):
    with pytest.raises(ExplainerError) as info:
        explain(model, images, None, method, **params)
    assert fragment in info.value.message and "\n" not in info.value.message


def test_the_window_is_checked_against_the_models_input_before_any_image(model):
    # test_resnet is fed 160x160 (its pretrained config)
    with pytest.raises(ExplainerError, match=r"occlusion window 200 is larger than test_resnet's input \(160x160\)"):
        check_applicable(model, "occlusion", window=200, stride=8)


class Detached(nn.Module):
    """A model whose forward cuts the input's gradient (e.g. a preprocessing step outside autograd)."""

    num_classes = 10
    pretrained_cfg = {"input_size": (3, SIZE, SIZE)}

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x):
        return self.net(x.detach())


@pytest.mark.parametrize("method", ["saliency", "input-x-gradient", "integrated-gradients", "smoothgrad", "guided-backprop"])
def test_a_model_without_an_input_gradient_is_refused(method, images):
    model = Detached()
    with pytest.raises(ExplainerError, match=rf"{method} needs d logit / d input, but Detached's logits have no gradient"):
        check_applicable(model, method)
    with pytest.raises(ExplainerError, match="logits have no gradient with respect to its input"):
        explain(model, images, None, method, **CHEAP.get(method, {}))
    assert explain(model, images, None, "occlusion").shape == (2, SIZE, SIZE)  # the forward alone: fine


def test_guided_backprop_is_refused_without_relu_modules():
    with pytest.raises(ExplainerError, match="guided-backprop clips the gradient at each nn.ReLU module, and test_vit has none"):
        check_applicable(tiny("test_vit"), "guided-backprop")

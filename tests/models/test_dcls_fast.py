"""The fast DCLS path: lean kernel construction, the frozen-kernel cache, trimmed kernels, clamping.

Every result is checked against the dcls package itself (``ConstructKernel2d``, ``Dcls2d.forward``
via ``dcls_implementation("reference")``) and against a transcription of its formulas.
"""

from __future__ import annotations

import copy
import logging
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from DCLS.construct.modules import ConstructKernel2d
from torch import nn
from typer.testing import CliRunner

import alignbench
from alignbench.cli.app import app
from alignbench.errors import AlignbenchWarning, ModelError
from alignbench.models import _dcls, _depthwise, clamp_positions, dcls_implementation, load_model
from alignbench.models._dcls_kernel import _NEGLIGIBLE, construct, trim_negligible
from alignbench.models.specs import EVERY_3X3, DclsRecipe, get_spec
from alignbench.testing.tolerance import EPS64, float32_bound, network_relative

VERSIONS = ("v0", "v1", "gauss")


# ------------------------------------------------------------------ the formulas, transcribed


def _transcribed(weight, P, SIG, version: str, size: int) -> torch.Tensor:
    """ConstructKernel2d.forward_v0 / forward_v1 / forward_vgauss (DCLS/construct/modules.py),
    formula for formula on the full D×D grid: IDX channel 0 is the column, channel 1 the row,
    and P is shifted by lim // 2."""
    taps = torch.arange(size, dtype=weight.dtype)
    col = taps.view(1, size, 1, 1, 1)  # I in the package: varies along the last grid axis
    row = taps.view(size, 1, 1, 1, 1)  # J
    p = P + size // 2
    if version == "v0":
        floor = p.floor()
        R1, R2 = p[0] - floor[0], p[1] - floor[1]
        cond1, cond2 = row == floor[0], col == floor[1]
        cond3, cond4 = row == floor[0] + 1, col == floor[1] + 1
        W1, W2 = (cond1 & cond2).to(weight), (cond1 & cond4).to(weight)
        W3, W4 = (cond3 & cond2).to(weight), (cond3 & cond4).to(weight)
        X = W1 + R1 * R2 * (W1 - W2 - W3 + W4) + R1 * (W3 - W1) + R2 * (W2 - W1)
    elif version == "v1":
        X = (1 - (col - p[0]).abs()).relu() * (1 - (row - p[1]).abs()).relu()
        X = X / (X.sum((0, 1)) + 1e-7)
    else:
        sig = SIG.abs() + 0.27
        X = torch.stack(torch.broadcast_tensors((col - p[0]) / sig[0], (row - p[1]) / sig[1])).norm(2, dim=0)
        X = (-0.5 * X**2).exp()
        X = X / (X.sum((0, 1)) + 1e-7)
    return (X * weight).sum(-1).permute(2, 3, 0, 1)


def _embed(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """A trimmed kernel back in the centre of the size×size span."""
    height, width = kernel.shape[-2:]
    out = kernel.new_zeros(*kernel.shape[:-2], size, size)
    top, left = (size - height) // 2, (size - width) // 2
    out[..., top : top + height, left : left + width] = kernel
    return out


def _parameters(version: str, case: str, dtype=torch.float64, shape=(6, 3, 5), size: int = 9, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=generator, dtype=dtype)
    limit = size // 2
    if case == "spread":  # anywhere in the span, as trained positions are
        P = (torch.rand(2, *shape, generator=generator, dtype=dtype) * 2 - 1) * limit
    elif case == "integer":  # from-dense: on the grid, where v1 and gauss take subgradients
        P = torch.randint(-limit, limit + 1, (2, *shape), generator=generator).to(dtype)
    elif case == "compact":  # Dcls2d's own init N(0, 0.5)
        P = 0.5 * torch.randn(2, *shape, generator=generator, dtype=dtype)
    else:  # "outside": some elements partly or wholly beyond the span, unclamped
        P = 1.5 * limit * torch.randn(2, *shape, generator=generator, dtype=dtype)
    SIG = None
    if version == "gauss":
        SIG = torch.rand(2, *shape, generator=generator, dtype=dtype) * 1.4 - 0.4
        if case == "integer":
            SIG.zero_()  # from-dense gauss: |SIG| + 0.27 at SIG = 0, where abs' = 0
    return weight, P, SIG


def _kernel_and_grads(fn, weight, P, SIG, grad_out):
    leaves = [t.clone().requires_grad_() for t in (weight, P, SIG) if t is not None]
    kernel = fn(*leaves, *([None] if SIG is None else []))
    grads = torch.autograd.grad((kernel * grad_out).sum(), leaves)
    return kernel.detach(), grads


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("case", ["spread", "integer", "compact", "outside"])
@pytest.mark.parametrize("version", VERSIONS)
def test_lean_construction_equals_dcls_and_the_transcribed_formula_with_gradients(version: str, case: str) -> None:
    size = 9
    weight, P, SIG = _parameters(version, case)
    out, in_per_group, count = weight.shape
    package = ConstructKernel2d(out, in_per_group, 1, count, (size, size), version)
    grad_out = torch.randn(out, in_per_group, size, size, dtype=weight.dtype, generator=torch.Generator().manual_seed(1))

    expected, expected_grads = _kernel_and_grads(package, weight, P, SIG, grad_out)
    transcribed, transcribed_grads = _kernel_and_grads(lambda w, p, s: _transcribed(w, p, s, version, size), weight, P, SIG, grad_out)
    lean, lean_grads = _kernel_and_grads(lambda w, p, s: _embed(construct(w, p, s, version, size), size), weight, P, SIG, grad_out)
    # float64 throughout: a kernel entry sums ≤ count = 5 elements' products of a few factors, |w| ≲ 4:
    # float32_bound(5 + 8, 4, eps=EPS64) ≈ 2.3e-14, so 1e-12 keeps a 40× margin and a wrong tap is O(|w|)
    torch.testing.assert_close(transcribed, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lean, expected, rtol=1e-12, atol=1e-12)
    for name, ours, theirs, written in zip(("weight", "P", "SIG"), lean_grads, expected_grads, transcribed_grads):
        # a gradient sums the size² = 81 positions' terms (1/σ² ≲ 14 factors for gauss): float32_bound(81 + 8,
        # 1, eps=EPS64) ≈ 4e-14 of Σ|terms|, which may exceed max|grad| by cancellation: 1e-10 leaves 2500× for it
        torch.testing.assert_close(written, theirs, rtol=1e-10, atol=1e-12, msg=f"transcription d/d{name}")
        assert _relative(ours, theirs) <= 1e-10, name


def _float32_bounds(version, weight, P, SIG, grad_out, size):
    """Bounds on two float32 constructions of one kernel and its gradients (float32_bound each):
    a tap sums the ``count`` elements' w·c(P, SIG) (c ≥ 0, the interpolation or normalised Gaussian,
    itself a size²-term normalisation for gauss), so Σ|terms| = the kernel of |w|; a parameter's
    gradient sums its element's size² taps g·∂k/∂θ (and the normalisation's size² again), Σ|terms|
    from each element's own Jacobian, built as a kernel of its own (forward mode, float64)."""
    out, in_per_group, count = weight.shape
    package = ConstructKernel2d(out, in_per_group, 1, count, (size, size), version).double()
    tail = [] if SIG is None else [SIG.double()]
    with torch.no_grad():
        magnitude = package(weight.double().abs(), P.double(), *tail, *([None] if SIG is None else []))
    kernel_bound = float32_bound(count + size * size + 8, 1.0) * magnitude
    if version != "gauss":
        # the bilinear c comes from P's fraction, rounded in float32 at |P + size/2| ≤ size: an absolute
        # error ≤ size·EPS in c on each of the element's 4 taps, however small c is there; those taps
        # are where a half-integer position puts 1/4
        with torch.no_grad():
            support = 4 * package(weight.double().abs(), P.double().floor() + 0.5, None)
        kernel_bound = kernel_bound + float32_bound(count + 8, size) * support
    n = weight.numel()
    single = ConstructKernel2d(n, 1, 1, 1, (size, size), version).double()
    leaves = [t.double().reshape(*t.shape[:-3], n, 1, 1) for t in (weight, P, SIG) if t is not None]
    g = grad_out.double().abs().unsqueeze(2)  # [out, in, 1, size, size]
    bounds = []
    for i, leaf in enumerate(leaves):
        per_leaf = []
        for part in [None] if i == 0 else [0, 1]:  # w, then P and SIG's two axes one at a time
            tangent = torch.zeros_like(leaf)
            if part is None:
                tangent.fill_(1.0)
            else:
                tangent[part] = 1.0
            tangents = tuple(tangent if j == i else torch.zeros_like(other) for j, other in enumerate(leaves))
            _, column = torch.func.jvp(lambda *leaf: single(*leaf, *([None] if SIG is None else [])), tuple(leaves), tangents)
            per_leaf.append((g * column.abs().reshape(out, in_per_group, count, size, size)).sum((-2, -1)))
        bounds.append(
            float32_bound(2 * size * size + 8, 1.0) * torch.stack(per_leaf) if i else float32_bound(2 * size * size + 8, 1.0) * per_leaf[0]
        )
    return kernel_bound, bounds


@pytest.mark.parametrize("version", VERSIONS)
def test_lean_construction_in_float32_is_within_1e_5_relative(version: str) -> None:
    size = 17
    weight, P, SIG = _parameters(version, "spread", dtype=torch.float32, shape=(8, 2, 34), size=size)
    out, in_per_group, count = weight.shape
    package = ConstructKernel2d(out, in_per_group, 1, count, (size, size), version)
    grad_out = torch.randn(out, in_per_group, size, size, generator=torch.Generator().manual_seed(1))
    expected, expected_grads = _kernel_and_grads(package, weight, P, SIG, grad_out)
    lean, lean_grads = _kernel_and_grads(lambda w, p, s: _embed(construct(w, p, s, version, size), size), weight, P, SIG, grad_out)
    kernel_bound, grad_bounds = _float32_bounds(version, weight, P, SIG, grad_out, size)
    assert bool(((lean - expected).abs() <= kernel_bound).all())  # was relative 1e-5, tuned
    for ours, theirs, bound in zip(lean_grads, expected_grads, grad_bounds):
        assert bool(((ours - theirs).abs() <= bound).all())


@pytest.mark.parametrize("version", VERSIONS)
def test_lean_construction_saves_nothing_for_backward_but_the_parameters(version: str) -> None:
    weight, P, SIG = _parameters(version, "spread", dtype=torch.float32, shape=(96, 1, 34), size=17)
    leaves = [t.requires_grad_() for t in (weight, P, SIG) if t is not None]
    parameter_bytes = sum(t.numel() * t.element_size() for t in leaves)

    def saved_bytes(build) -> int:
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            build()
        return sum(t.numel() * t.element_size() for t in saved if not any(t is leaf for leaf in leaves))

    package = ConstructKernel2d(96, 1, 1, 34, (17, 17), version)
    assert saved_bytes(lambda: construct(weight, P, SIG, version, 17)) == 0
    assert saved_bytes(lambda: package(weight, P, SIG)) > 20 * parameter_bytes


def test_elements_on_the_centre_grid_give_a_trimmed_kernel() -> None:
    weight, P, _ = _parameters("v0", "integer", shape=(4, 2, 5), size=9)
    P = P.clamp(-1, 1)  # every element in the 3×3 centre
    kernel = construct(weight, P, None, "v1", 9)
    assert kernel.shape[-2:] == (3, 3)
    # v0 keeps the neighbour below/right of the lowest/rightmost element: its slope is not 0.
    assert construct(weight, P, None, "v0", 9).shape[-2:] == (5, 5)


# ------------------------------------------------------------------ models: fast == reference


def _tiny(name: str, recipe: DclsRecipe, *, seed: int = 0, spread: float = 1.0, dtype=torch.float32) -> nn.Module:
    """A tiny timm model converted with ``recipe``, positions uniform over ``spread`` of the span
    (shared by the convs of a stage), random weights and SIG."""
    torch.manual_seed(seed)
    model = timm.create_model(name).eval()
    targets = _dcls.plan(model, recipe, get_spec(name).stage_pattern)
    logging.disable(logging.WARNING)
    try:
        _dcls.convert(model, recipe, targets)
    finally:
        logging.disable(logging.NOTSET)
    _dcls.tie_positions(model, targets)
    limit = recipe.dilated_kernel_size // 2
    with torch.no_grad():
        for _, conv in _dcls.dcls_layers(model):
            conv.weight.normal_(0, 0.3)
            conv.P.uniform_(-spread * limit, spread * limit)
            if conv.SIG is not None:
                conv.SIG.uniform_(-0.3, 0.8)
    return model.to(dtype)


def _input(size: int = 64, dtype=torch.float32, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3)).to(dtype)


def _network_relative(model: nn.Module, passes: int = 1) -> float:
    """tolerance.network_relative: float32_relative of all the fan-ins, each stage well conditioned."""
    return network_relative(model, passes)


def _assert_same(ours: torch.Tensor, reference: torch.Tensor, model: nn.Module) -> None:
    """Equal up to float32 rounding: the fast path sums the same products in another order."""
    assert ours.shape == reference.shape and ours.dtype == reference.dtype
    assert _relative(ours, reference) <= _network_relative(model)  # was 1e-5, tuned


def _outputs_and_grads(model: nn.Module, x: torch.Tensor, implementation: str):
    model.zero_grad(set_to_none=True)
    with dcls_implementation(implementation):
        out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


MODEL_CASES = [
    ("test_convnext", DclsRecipe("v0", 9, 10), 64),
    ("test_convnext", DclsRecipe("v1", 9, 10), 64),
    ("test_convnext", DclsRecipe("gauss", 9, 10), 64),
    ("test_convnext", DclsRecipe("v0", 17, 12), 64),  # kernels above 11×11: alignbench's depthwise backward
    ("test_resnet", DclsRecipe("v0", 5, 5, EVERY_3X3), 64),  # full convs with stride 2
    ("test_efficientnet", DclsRecipe("v1", 9, 12), 67),  # TF "SAME" with stride 2 at an odd size
]


@pytest.mark.parametrize(
    ("name", "recipe", "size"),
    MODEL_CASES,
    ids=[f"{name}-{recipe.version}-{recipe.dilated_kernel_size}" for name, recipe, _ in MODEL_CASES],
)
def test_fast_path_equals_the_reference_under_no_grad_and_with_grad(name, recipe, size) -> None:
    model = _tiny(name, recipe)
    x = _input(size)
    with torch.no_grad(), dcls_implementation("reference"):
        expected = model(x)
    with torch.no_grad():
        _assert_same(model(x), expected, model)
        _assert_same(model(x), expected, model)  # from the cache
    out, grads = _outputs_and_grads(model, x, "fast")
    ref_out, ref_grads = _outputs_and_grads(model, x, "reference")
    _assert_same(out, ref_out, model)
    assert grads.keys() == ref_grads.keys()
    assert any(key.endswith(".P") for key in grads)
    for key in grads:
        assert _relative(grads[key], ref_grads[key]) <= _network_relative(model, passes=2), key  # was 1e-5


@pytest.mark.parametrize("version", VERSIONS)
def test_grad_cam_maps_equal_the_reference(version: str) -> None:
    from alignbench.explainers._gradient import gradcam
    from alignbench.explainers._split import gradient_evidence

    model = _tiny("test_convnext", DclsRecipe(version, 9, 10)).requires_grad_(False)
    x = _input()
    targets = model(x).argmax(1)
    fast = gradient_evidence(model, x, targets)
    with dcls_implementation("reference"):
        reference = gradient_evidence(model, x, targets)
    # A and G within the network's bound (forward; forward and backward); the raw map
    # mean_c(w_c·A_c) then within (their relative errors + its own C + HW sums) of mean_c max|G_c|·max|A|,
    # absolute: no min-max's 1/range (was rtol=1e-4, atol=1e-5 on the normalised maps)
    a_rel, g_rel = _network_relative(model), _network_relative(model, passes=2)
    for ours, theirs, rel in ((fast.activations, reference.activations, a_rel), (fast.gradients, reference.gradients, g_rel)):
        assert _relative(ours, theirs) <= rel
    c, hw = reference.activations.shape[1], reference.activations.shape[2] * reference.activations.shape[3]
    magnitude = float(reference.gradients.abs().amax((2, 3)).mean(1).max() * reference.activations.abs().max())
    bound = 2 * (a_rel + g_rel + float32_bound(c + hw + 8, 1.0)) * magnitude
    assert float((gradcam(fast) - gradcam(reference)).abs().max()) <= bound
    assert float(gradcam(reference).abs().max()) > 10 * bound  # a check, not a formality
    for method in ("gradcam", "threshold-gradcam"):  # the public path runs on the fast kernels
        assert alignbench.explain(model, x, method=method).shape == (1, 64, 64)


# ------------------------------------------------------------------ the frozen-kernel cache


def _count_constructions(monkeypatch) -> list[int]:
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return construct(*args, **kwargs)

    monkeypatch.setattr(_dcls, "construct", counting)
    return calls


def test_frozen_kernels_are_built_once_per_parameter_version(monkeypatch) -> None:
    model = _tiny("test_convnext", DclsRecipe("v1", 9, 10)).requires_grad_(False)
    convs = [conv for _, conv in _dcls.dcls_layers(model)]
    calls = _count_constructions(monkeypatch)
    x = _input()
    model(x)
    model(x)
    assert len(calls) == len(convs)
    # Shared positions: touching one stage's P rebuilds exactly that stage's convs.
    stage = [conv for conv in convs if conv.P is convs[0].P]
    with torch.no_grad():
        convs[0].P.add_(0.25)
    model(x)
    assert len(calls) == len(convs) + len(stage)
    with dcls_implementation("reference"):
        expected = model(x)
    _assert_same(model(x), expected, model)


def test_positions_replaced_by_a_new_tensor_are_noticed() -> None:
    model = _tiny("test_convnext", DclsRecipe("v1", 9, 10)).requires_grad_(False)
    x = _input()
    model(x)
    for _, conv in _dcls.dcls_layers(model):  # untie: every conv its own, moved positions
        conv.P = nn.Parameter(conv.P.detach().flip(-1).clone(), requires_grad=False)
    with dcls_implementation("reference"):
        expected = model(x)
    _assert_same(model(x), expected, model)


def test_an_optimizer_step_is_noticed_by_the_cache() -> None:
    model = _tiny("test_convnext", DclsRecipe("v0", 9, 10))
    x = _input()
    with torch.no_grad():
        before = model(x)  # caches every kernel (grad mode off)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x).square().mean().backward()
    optimizer.step()
    clamp_positions(model)
    with torch.no_grad():
        after = model(x)
        with dcls_implementation("reference"):
            expected = model(x)
    assert not torch.allclose(after, before)
    _assert_same(after, expected, model)


def test_trainable_parameters_with_grad_enabled_never_use_the_cache(monkeypatch) -> None:
    model = _tiny("test_convnext", DclsRecipe("gauss", 9, 10))
    x = _input()
    with torch.no_grad():
        model(x)
    calls = _count_constructions(monkeypatch)
    model(x).sum().backward()
    convs = [conv for _, conv in _dcls.dcls_layers(model)]
    assert len(calls) == len(convs)
    assert all(conv.P.grad is not None and conv.SIG.grad is not None and conv.weight.grad is not None for conv in convs)
    assert all(conv._frozen is None for conv in convs)  # no stale copy kept while training


def test_moving_the_model_rebuilds_its_kernels_and_the_cache_is_no_state() -> None:
    model = _tiny("test_convnext", DclsRecipe("v1", 9, 10)).requires_grad_(False)
    keys = set(model.state_dict())
    x = _input()
    model(x)
    assert set(model.state_dict()) == keys
    assert copy.deepcopy(model)(x).shape == (1, 1000)
    model = model.to(torch.float64)
    out = model(x.double())
    assert out.dtype == torch.float64
    with dcls_implementation("reference"):
        _assert_same(out, model(x.double()), model)


def test_a_kernel_cached_in_inference_mode_serves_a_later_grad_cam() -> None:
    model = _tiny("test_convnext", DclsRecipe("v0", 9, 10)).requires_grad_(False)
    x = _input()
    with torch.inference_mode():
        model(x)
    x = x.clone().requires_grad_()
    model(x).sum().backward()  # would fail on an inference tensor saved for backward
    assert x.grad is not None


# ------------------------------------------------------------------ trimmed kernels


def test_a_trimmed_kernel_gives_the_output_of_the_full_one() -> None:
    conv = _dcls.build_dcls(_dcls.ConvTarget("c", 4, 6, 1, (3, 3), (1, 1), (1, 1), False, True, "c"), DclsRecipe("v1", 9, 4))
    with torch.no_grad():
        conv.P.uniform_(-1, 1).round_()  # every element in the 3×3 centre
    conv.requires_grad_(False)
    kernel = conv.kernel()
    assert kernel.shape[-2:] == (3, 3)
    x = torch.randn(2, 4, 13, 13)
    full = F.conv2d(x, _dcls.dcls_kernel(conv), conv.bias, padding=4)
    # the same nonzero taps (4 channels × 3×3, the rest exact zeros) and the bias in another order
    magnitude = F.conv2d(x.abs(), _dcls.dcls_kernel(conv).abs(), conv.bias.abs(), padding=4)
    torch.testing.assert_close(conv(x), full, rtol=0, atol=float32_bound(4 * 9 + 1, float(magnitude.max())))


@pytest.mark.parametrize("size", [16, 17])
def test_a_kernel_trimmed_below_the_dense_size_with_tf_same_padding_and_stride_2(size: int) -> None:
    target = _dcls.ConvTarget("c", 3, 3, 3, (5, 5), (2, 2), (0, 0), True, False, "c")
    conv = _dcls.build_dcls(target, DclsRecipe("v1", 9, 2))
    with torch.no_grad():
        conv.P.zero_()  # one 1×1 tap: narrower than the dense 5×5, so the input is cropped
    conv.requires_grad_(False)
    assert conv.kernel().shape[-2:] == (1, 1)
    x = torch.randn(2, 3, size, size)
    with dcls_implementation("reference"):
        expected = conv(x)
    # one tap per input channel (≤ 3 terms): float32_bound(3 + 1, Σ|k|·max|x|)
    bound = float32_bound(4, float(conv.kernel().abs().flatten(1).sum(1).max() * x.abs().max()))
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=bound)


def test_the_gauss_window_leaves_out_only_tails_below_1e_9_of_the_peak() -> None:
    weight, P, SIG = _parameters("gauss", "integer", dtype=torch.float64, shape=(4, 1, 3), size=17)
    P = P.clamp(-1, 1)  # SIG = 0: the narrowest Gaussians, sigma 0.27
    lean = construct(weight, P, SIG, "gauss", 17)
    assert lean.shape[-2:] == (5, 5)
    full = ConstructKernel2d(4, 1, 1, 3, (17, 17), "gauss")(weight, P, SIG)
    peak = full.abs().amax((-2, -1), keepdim=True)
    # not a rounding bound: the window's own cut-off (_NEGLIGIBLE of the peak), plus float64 rounding of the 3 elements' sum
    bound = (_NEGLIGIBLE + float32_bound(3 + 8, 1.0, eps=EPS64)) * peak
    assert bool(((full - _embed(lean, 17)).abs() <= bound).all())


def test_taps_of_elements_with_weight_zero_are_trimmed_from_a_frozen_kernel() -> None:
    weight, P, _ = _parameters("v1", "integer", shape=(4, 1, 3), size=9)
    P = P.clamp(-1, 1)
    weight[..., 2], P[:, ..., 2] = 0.0, 3.0  # a spare element, as from-dense leaves them
    kernel = construct(weight, P, None, "v1", 9)
    assert kernel.shape[-2:] == (7, 7) and trim_negligible(kernel).shape[-2:] == (3, 3)
    torch.testing.assert_close(_embed(trim_negligible(kernel), 9), _embed(kernel, 9), rtol=0, atol=0)


@pytest.mark.parametrize("method", ["conv", "fft"])
@pytest.mark.parametrize(
    ("size", "stride", "kernel", "padding"),
    [
        (9, 1, 17, 8),
        (20, 1, 13, 6),
        (10, 2, 17, 8),
        (11, 2, 15, 7),
        (33, 2, 17, 9),
    ],
)
def test_large_depthwise_backward_equals_autograd(monkeypatch, method, size, stride, kernel, padding) -> None:
    monkeypatch.setattr(_depthwise, "_SMALL_MAP", 10**9 if method == "conv" else 0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, size, size, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 1, kernel, kernel, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    expected = F.conv2d(*leaves, stride, padding, 1, 5)
    grad = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    expected_grads = torch.autograd.grad(expected, leaves, grad)
    ours = [t.clone().requires_grad_() for t in (x, weight, bias)]
    out = _depthwise.depthwise_conv(
        ours[0].contiguous(memory_format=torch.channels_last), ours[1], ours[2], (stride, stride), (padding, padding)
    )
    # float64 sums in another order (was 1e-12 and 1e-11, tuned): each entry within float32_bound(n, Σ|terms|,
    # eps=EPS64) of autograd's, Σ|terms| being the same computation on |x|, |w|, |b|, |grad| (all terms ≥ 0)
    bounds = _depthwise_bounds(x, weight, bias, grad, stride, padding, kernel)
    assert bool(((out - expected).abs() <= bounds[0]).all())
    for name, got, want, bound in zip(("x", "weight", "bias"), torch.autograd.grad(out, ours, grad), expected_grads, bounds[1:]):
        assert bool(((got - want).abs() <= bound).all()), name


def _depthwise_bounds(x, weight, bias, grad, stride, padding, kernel):
    """Bounds on the output and the gradients (x, weight, bias) of two float64 depthwise convolutions:
    an output or an input's gradient sums ≤ kernel² terms, the weight's and bias's gradients sum over the
    batch and the output positions. The weight gradient may come from an FFT, whose error is normwise
    (Higham §24.1: ≈ log2(N) roundings of ‖x‖₂‖grad‖₂ per transform, three transforms): added for both methods."""
    leaves = [t.abs().requires_grad_() for t in (x, weight, bias)]
    magnitude = F.conv2d(*leaves, stride, padding, 1, 5)
    grads = torch.autograd.grad(magnitude, leaves, grad.abs())
    positions = grad.shape[0] * grad.shape[2] * grad.shape[3]
    padded = x.shape[-1] + 2 * padding + kernel
    fft = (
        float32_bound(3 * 2 * math.ceil(math.log2(padded)) + 8, 1.0, eps=EPS64)
        * ((x.flatten(2).norm(dim=2) * grad.flatten(2).norm(dim=2)).sum(0)[:, None, None, None])
    )
    return (
        float32_bound(kernel * kernel + 8, 1.0, eps=EPS64) * magnitude.detach(),
        float32_bound(kernel * kernel + 8, 1.0, eps=EPS64) * grads[0],
        float32_bound(positions + 8, 1.0, eps=EPS64) * grads[1] + fft,
        float32_bound(positions + 8, 1.0, eps=EPS64) * grads[2],
    )


# ------------------------------------------------------------------ switch, clamping, bad input


def test_the_environment_switch_runs_the_package_forward(monkeypatch) -> None:
    model = _tiny("test_convnext", DclsRecipe("v0", 9, 10))
    conv = next(conv for _, conv in _dcls.dcls_layers(model))
    with torch.no_grad():
        model(_input())
    assert conv.DCK.IDX is None  # the package's construction never ran
    monkeypatch.setenv("ALIGNBENCH_DCLS_IMPL", "reference")
    with torch.no_grad():
        model(_input())
    assert conv.DCK.IDX is not None
    monkeypatch.setenv("ALIGNBENCH_DCLS_IMPL", "quick")
    with pytest.raises(ModelError, match=r"ALIGNBENCH_DCLS_IMPL='quick' is not one of fast, reference"):
        model(_input())


def test_clamp_positions_clamps_each_shared_tensor_into_the_span() -> None:
    model = _tiny("test_convnext", DclsRecipe("v0", 9, 10))
    convs = [conv for _, conv in _dcls.dcls_layers(model)]
    with torch.no_grad():
        model(_input())  # a cached kernel that the clamp must invalidate
        convs[0].P[0, 0, 0, 0] = 6.5
        convs[0].P[1, 1, 0, 1] = -4.25
        convs[-1].P[0, 0, 0, 0] = 4.0  # on the border: stays
    assert clamp_positions(model) == 2
    assert convs[0].P[0, 0, 0, 0].item() == 4.0 and convs[0].P[1, 1, 0, 1].item() == -4.0
    assert clamp_positions(model) == 0
    with torch.no_grad(), dcls_implementation("reference"):
        expected = model(_input())
    with torch.no_grad():
        _assert_same(model(_input()), expected, model)


RECIPE = dict(version="v1", dilated_kernel_size=9, kernel_count=20)


def _checkpoint_with_position(tmp_path, value: float):
    model = load_model("test_convnext", dcls=True, pretrained=False, init="random", **RECIPE)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["stages.1.blocks.0.conv_dw.P"][0, 0, 0, 0] = value
    path = tmp_path / "positions.pth"
    torch.save(state, path)
    return path


def test_checkpoint_positions_just_outside_the_span_are_clamped_with_a_warning(tmp_path) -> None:
    path = _checkpoint_with_position(tmp_path, 4.3)
    with pytest.warns(AlignbenchWarning, match=r"positions of stages\.1\.blocks\.0\.conv_dw lay up to 0\.3 px outside the 9×9"):
        model = load_model("test_convnext", dcls=True, checkpoint=path, **RECIPE)
    assert model.get_submodule("stages.1.blocks.0.conv_dw").P.max().item() == 4.0


def test_checkpoint_positions_far_outside_the_span_are_refused(tmp_path) -> None:
    path = _checkpoint_with_position(tmp_path, -7.0)
    with pytest.raises(
        ModelError, match=r"stages\.1\.blocks\.0\.conv_dw lie 3\.00 px outside the 9×9 dilated kernel; .*larger --dilated-kernel-size"
    ):
        load_model("test_convnext", dcls=True, checkpoint=path, **RECIPE)


def test_the_cli_prints_the_clamping_warning_on_one_line(tmp_path) -> None:
    path = _checkpoint_with_position(tmp_path, 4.3)
    args = [
        "convert",
        "test_convnext",
        "--dcls",
        "--checkpoint",
        str(path),
        "--version",
        "v1",
        "--dilated-kernel-size",
        "9",
        "--kernel-count",
        "20",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: checkpoint ") and "clamped into it" in lines[0]

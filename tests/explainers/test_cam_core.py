"""The gradient-weighted core: known answers, equality with pytorch-grad-cam, the split's guarantees."""

from __future__ import annotations

import gc
from functools import partial

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import EigenGradCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

from alignbench.errors import ExplainerError
from alignbench.explainers import explain, explain_batch
from alignbench.explainers._explain import upsample
from alignbench.explainers._gradient import GRADIENT_METHODS, gradcam
from alignbench.explainers._split import Evidence, gradient_evidence, split_model
from alignbench.testing.cams import MEANINGFUL, LibraryCam, assert_matches_library, library_cam, propagated_atol, raw_atol
from alignbench.testing.tolerance import float32_bound, float32_relative, network_relative

SIZE = 96  # timm test models: 3x3 feature maps, enough to tell positions apart


def minmax(maps) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float64)
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    return np.where(high > low, (maps - low) / np.where(high > low, high - low, 1), 0.0)


def library(cam_class, model, layer, images, targets, reshape=None) -> LibraryCam:
    """pytorch-grad-cam on the unmodified model, hooked at the paper's target layer: its map and raw map."""
    return library_cam(cam_class, model, layer, images, targets, reshape)


def channels(evidence) -> int:
    """Our Grad-CAM is the paper's channel mean, the library's a sum: C times it."""
    return evidence.activations.shape[1]


def tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------ known answers on a hand-built model


class HandModel(nn.Module):
    """A = the input itself (2 channels, 2x2); head = global average pool + linear, so
    dy_t/dA_k,ij = W[t, k] / 4 everywhere and every map is computable by hand."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.5], [-1.0, 0.0]]))
            self.fc.bias.zero_()

    def forward_features(self, x):
        return x

    def forward_head(self, a):
        return self.fc(a.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


HAND_INPUT = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, -4.0]]]])
# every hand answer sums over C = 2 channels and HW = 4 positions terms |w·A| ≤ 2·4:
# float32_bound(2 + 4 + 8, 8), times 4/r ≤ 3 where a min-max divides by the range r = 11/8 (was allclose's default)
HAND_ATOL = 3 * float32_bound(2 + 4 + 8, 8.0)


def hand_close(ours: torch.Tensor, expected: torch.Tensor) -> bool:
    return torch.allclose(ours, expected, rtol=0, atol=HAND_ATOL)


def test_gradcam_known_answer():
    # w = W[0] / 4 = (0.25, -0.5); mean_k(w_k A_k) = ([[.25,.5],[.75,1]] + [[-2,0],[0,2]]) / 2
    expected = torch.tensor([[[0.0, 0.25], [0.375, 1.5]]])  # ReLU of [[-0.875, .25], [.375, 1.5]]
    assert hand_close(explain(HandModel(), HAND_INPUT, targets=0, method="gradcam"), expected)


def test_threshold_gradcam_known_answer():
    # ReLU per channel first: mean([[.25,.5],[.75,1]], [[0,0],[0,2]]) = [[.125,.25],[.375,1.5]];
    # min-max -> [[0, 1/11], [2/11, 1]]; floor 0.3
    model = HandModel()
    assert hand_close(explain(model, HAND_INPUT, 0, "threshold"), torch.tensor([[[0.3, 0.3], [0.3, 1.0]]]))
    floor_0 = torch.tensor([[[0.0, 1 / 11], [2 / 11, 1.0]]])
    assert hand_close(explain(model, HAND_INPUT, 0, "threshold", threshold=0.0), floor_0)


def test_hirescam_and_layercam_known_answers():
    model = HandModel()
    # class 0: G = (0.25, -0.5); HiResCAM = ReLU(sum_k G_k A_k) = ReLU([[-1.75,.5],[.75,3]])
    assert hand_close(explain(model, HAND_INPUT, 0, "hirescam"), torch.tensor([[[0.0, 0.5], [0.75, 3.0]]]))
    # LayerCAM keeps only positive gradients: ReLU(0.25 A_0)
    assert hand_close(explain(model, HAND_INPUT, 0, "layercam"), torch.tensor([[[0.25, 0.5], [0.75, 1.0]]]))


def test_target_logit_is_pre_softmax_and_the_default_target_is_top1():
    model = HandModel()
    result = explain_batch(model, HAND_INPUT, method="gradcam")
    # logits = W·mean(A) = (2.5 - 0, 1.25 + 0, -2.5): top-1 is class 0
    assert hand_close(result.logits, torch.tensor([[2.5, 1.25, -2.5]]))
    assert result.targets.tolist() == [0]
    # class 1: w = (0.125, 0.125) -> mean_k = [[.3125, .125], [.1875, 0]]; softmax would couple the classes
    expected = torch.tensor([[[0.3125, 0.125], [0.1875, 0.0]]])
    assert hand_close(explain(model, HAND_INPUT, targets=[1], method="gradcam"), expected)


def test_upsampling_is_bilinear_with_half_pixel_centres():
    # A 2x2 map f(y, x) = 2y + x upsampled to 4x4 samples at (i + 0.5)/2 - 0.5 = -.25, .25, .75, 1.25,
    # clamped to [0, 1]: 0, .25, .75, 1 on each axis.
    grid = torch.tensor([0.0, 0.25, 0.75, 1.0])
    expected = 2 * grid[:, None] + grid[None, :]
    assert hand_close(upsample(torch.tensor([[[0.0, 1.0], [2.0, 3.0]]]), (4, 4))[0], expected)


# ------------------------------------------------------------------ equal to pytorch-grad-cam


TARGET_LAYERS = {  # the layer whose output is A, for the library run on the unmodified model
    "test_convnext": lambda m: m.stages[-1],
    "test_resnet": lambda m: m.layer4,
    "test_efficientnet": lambda m: m.bn2,
}


@pytest.mark.parametrize("name", sorted(TARGET_LAYERS))
def test_gradcam_equals_pytorch_grad_cam_after_minmax(name, images):
    model = tiny(name)
    targets = [1, 4, 7]
    ours = explain(model, images, targets, "gradcam")
    theirs = library(GradCAM, model, TARGET_LAYERS[name](model), images, targets)
    assert ours.shape == (3, SIZE, SIZE)
    evidence = gradient_evidence(model, images, torch.tensor(targets))
    assert_matches_library(gradcam(evidence), ours, theirs, evidence, raw_scale=channels(evidence))


@pytest.mark.parametrize(
    "method, cam_class",
    [("gradcam++", GradCAMPlusPlus), ("xgradcam", XGradCAM), ("layercam", LayerCAM), ("hirescam", HiResCAM)],
)
def test_core_methods_equal_pytorch_grad_cam_after_minmax(method, cam_class, images):
    model = tiny("test_resnet")
    targets = [2, 2, 5]
    theirs = library(cam_class, model, model.layer4, images, targets)
    evidence = gradient_evidence(model, images, torch.tensor(targets))
    hw = evidence.activations.shape[2] * evidence.activations.shape[3]
    ours = explain(model, images, targets, method)
    assert_matches_library(GRADIENT_METHODS[method](evidence), ours, theirs, evidence, hw / 2 if method == "gradcam++" else 1.0)


def test_eigengradcam_equals_the_library_up_to_the_singular_vectors_sign(images):
    """The library's sign is whatever LAPACK returns; ours is fixed (see _gradient.first_component).
    Each image must equal the library's projection with one of the two signs — and the library's
    EigenGradCAM exactly wherever its sign agrees."""
    model = tiny("test_convnext")
    targets = [0, 3, 9]
    ours = minmax(explain(model, images, targets, "eigengradcam"))
    evidence = gradient_evidence(model, images, torch.tensor(targets))
    projection = torch.from_numpy(get_2d_projection((evidence.gradients * evidence.activations).numpy()))
    raw = [upsample(torch.relu(s * projection), (SIZE, SIZE)) for s in (1, -1)]
    candidates = [minmax(r) for r in raw]
    atols = [svd_atol(evidence, r) for r in raw]  # was 2e-5 for both, tuned
    theirs = library(EigenGradCAM, model, model.stages[-1], images, targets)
    for i in range(len(targets)):
        # meaningful: the two signs' maps differ by more than both bounds, so at most one can match
        assert np.abs(candidates[0][i] - candidates[1][i]).max() > atols[0][i] + atols[1][i]
        match = [np.abs(ours[i] - c[i]).max() <= atol[i] for c, atol in zip(candidates, atols)]
        assert any(match)
        if match[0]:
            np.testing.assert_allclose(ours[i], theirs.maps[i], rtol=0, atol=atols[0][i])


def svd_atol(evidence, raw) -> np.ndarray:
    """Per-image bound on |ours - a min-maxed first principal component of G·A from another SVD| (the
    library's LAPACK, on the G and A it captured itself):

    - the centred [HW, C] matrix M is perturbed by a backward-stable SVD's float32_bound(C + HW + 8, σ1)
      and by the captured G·A's own rounding (A and G each within float32_bound(C + 8) of their largest
      entry, as assert_matches_library checks), E in Frobenius norm;
    - the first right singular vector then turns by ≤ ‖E‖ / (σ1 - σ2 - ‖E‖) (Wedin), moving each
      projection row·v by ≤ |row|·that + ‖E‖ + the dot product's float32_bound(C + 8, |row|);
    - min-max by the range r of ``raw`` (the map before it): 4·error/r, the library's 1e-7/r, and
      the resizes' and the division's float32_relative(16), as cams.library_atol."""
    a, g = evidence.activations.double(), evidence.gradients.double()
    rows = (g * a).flatten(2).transpose(1, 2)
    rows = rows - rows.mean(1, keepdim=True)
    _, hw, c = rows.shape
    sigma = torch.linalg.svdvals(rows)
    top = (1, 2, 3)
    capture = float32_bound(c + 8, 1.0) * (g.abs().amax(top, keepdim=True) * a.abs() + g.abs() * a.abs().amax(top, keepdim=True))
    perturbation = float32_bound(c + hw + 8, 1.0) * sigma[:, 0] + 2 * capture.flatten(1).norm(dim=1)  # 2: the centring
    gap = (sigma[:, 0] - sigma[:, 1] - perturbation).clamp_min(0)
    length = rows.norm(dim=2).amax(1)
    turn = torch.where(gap > 0, perturbation / gap.clamp_min(1e-300), torch.full_like(gap, torch.inf))
    error = length * turn + perturbation + float32_bound(c + 8, 1.0) * length
    flat = raw.double().flatten(1)
    r = flat.amax(1) - flat.amin(1)
    bound = torch.where(r > 0, (4 * error + 1e-7) / r.clamp_min(1e-300), torch.full_like(r, torch.inf))
    return (bound + float32_relative(16)).numpy()


# ------------------------------------------------------------------ Threshold-Grad-CAM


def test_threshold_floor_and_range(images):
    model = tiny("test_convnext")
    for floor in (0.3, 0.55):
        maps = explain(model, images, [1, 2, 3], "threshold-gradcam", threshold=floor)
        flat = maps.flatten(1)
        # the floor is applied before upsampling, and bilinear weights are convex: it stays, up to the
        # interpolation's 4 products summed, float32_bound(4 + 1, floor)
        assert torch.allclose(flat.min(1).values, torch.full((3,), floor), rtol=0, atol=float32_bound(4 + 1, floor))
        assert bool((flat.max(1).values <= 1).all()) and bool((flat.max(1).values > floor).all())
    low = explain(model, images[:, :, :32, :32], [1, 2, 3], "threshold-gradcam")  # 1x1 features: constant map
    assert torch.allclose(low, torch.full_like(low, 0.3), rtol=0, atol=float32_bound(4 + 1, 0.3))  # as the floor above


def paper_threshold_gradcam(model, images, targets, threshold=0.3):
    """The paper's way (threshold_GradCAM.py): forward with autograd on every weight, back-propagate
    the logit through all of them, read dy/dA from a hook; then the same formula."""
    a = model.forward_features(images)
    a.retain_grad()
    logits = model.forward_head(a)
    (logits * nn.functional.one_hot(targets, logits.shape[1])).sum().backward()
    cam = torch.relu(a.grad.mean((2, 3), keepdim=True) * a.detach()).mean(1)
    low = cam.flatten(1).min(1).values[:, None, None]
    high = cam.flatten(1).max(1).values[:, None, None]
    cam = torch.clamp_min((cam - low) / (high - low), threshold)
    model.zero_grad(set_to_none=True)
    return nn.functional.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def test_threshold_gradcam_equals_the_papers_full_backward(images):
    model = tiny("test_resnet")
    targets = torch.tensor([3, 1, 8])
    # the same formula on A and G from the same kernels (G by another backward: each within the map's
    # own n·EPS scale, as assert_matches_library checks): the mean's raw error ≤ 2·raw_atol / C, then
    # min-max by the coarse map's range r (4·error/r, the floor is exact) and the upsampling's roundings
    # (float32_relative(8)); was 1e-6, tuned
    evidence = gradient_evidence(model, images, targets)
    coarse = torch.relu(evidence.gradients.mean((2, 3), keepdim=True) * evidence.activations).mean(1).double().flatten(1)
    error = 2 * raw_atol(evidence.activations, evidence.gradients).flatten(1).amax(1) / channels(evidence)
    atol = (4 * error / (coarse.amax(1) - coarse.amin(1)) + float32_relative(8))[:, None, None].numpy()
    assert (atol <= MEANINGFUL).all()
    ours, paper = explain(model, images, targets, "threshold").numpy(), paper_threshold_gradcam(model, images, targets).detach().numpy()
    assert (np.abs(ours - paper) <= atol).all()


# ------------------------------------------------------------------ the target layer of every family


def _metaformer():
    from timm.models.metaformer import Attention, LayerNorm2dNoBias, LayerNormNoBias, MetaFormer, SepConv

    torch.manual_seed(0)
    return MetaFormer(
        depths=(1, 1, 1, 1),
        dims=(8, 16, 32, 32),
        token_mixers=[SepConv, SepConv, Attention, Attention],
        norm_layers=[LayerNorm2dNoBias] * 2 + [LayerNormNoBias] * 2,
        num_classes=10,
    ).eval()


def _fastvit():
    from timm.models.fastvit import FastVit, RepConditionalPosEnc

    torch.manual_seed(0)
    return FastVit(
        layers=(1, 1, 1, 1),
        embed_dims=(8, 16, 32, 32),
        pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(7, 7))),
        token_mixers=("repmixer", "repmixer", "repmixer", "attention"),
        num_classes=10,
    ).eval()


# family -> (tiny model of that family's timm class, the layer the paper explains, registry model whose DCLS recipe applies)
FAMILIES = {
    "convnext": (lambda: tiny("test_convnext"), lambda m: m.stages[-1], "convnext_tiny"),  # ConvNextGradCAM: features_conv output
    "metaformer": (_metaformer, lambda m: m.stages[-1], "caformer_s18"),  # MetaformerGradCAM: last stage, before norm
    "fastvit": (_fastvit, lambda m: m.final_conv, "fastvit_sa24"),  # FastvitGradCAM: conv_exp
    "resnet": (lambda: tiny("test_resnet"), lambda m: m.layer4, "resnet50"),  # resnetGradCAM: forward_features
    "efficientnet": (lambda: tiny("test_efficientnet"), lambda m: m.bn2, "efficientnet_lite0"),  # conv_head + bn2
}


def _to_dcls(model: nn.Module, registry_name: str) -> nn.Module:
    from alignbench.models._dcls import convert, plan
    from alignbench.models.specs import MODELS

    spec = MODELS[registry_name]
    convert(model, spec.dcls, plan(model, spec.dcls, spec.stage_pattern))
    return model.eval()


@pytest.mark.parametrize("dcls", [False, True], ids=["dense", "dcls"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_target_layer_of_every_family(family, dcls):
    """A is the output of the layer the paper's code explains, in NCHW, and Grad-CAM on it equals
    pytorch-grad-cam hooked at that layer of the unmodified model — dense and after DCLS conversion."""
    build, layer_of, registry_name = FAMILIES[family]
    model = build()
    if dcls:
        model = _to_dcls(model, registry_name)
        assert any(type(m).__name__.startswith("Dcls") for m in model.modules())
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    targets = [6]
    captured = []
    handle = layer_of(model).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        evidence = gradient_evidence(model, images, torch.tensor(targets))
    finally:
        handle.remove()
    assert evidence.activations.ndim == 4 and evidence.activations.shape[1] == model.num_features
    assert torch.equal(evidence.activations, captured[0])
    ours = upsample(gradcam(evidence), (64, 64))  # what explain(..., "gradcam") returns
    theirs = library(GradCAM, model, layer_of(model), images, targets)
    assert_matches_library(gradcam(evidence), ours, theirs, evidence, raw_scale=channels(evidence))


def test_metaformers_need_no_nhwc_handling():
    """The paper's metaformer code is NHWC (pools dims [1, 2]); timm's MetaFormer stages emit NCHW,
    so A is used as it is: channels = the last stage width, no permute, and the map's rows and
    columns are the image's."""
    model = _metaformer()
    assert not split_model(model).channels_last
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = split_model(model).features(images)
    assert a.ndim == 4 and a.shape[:2] == (1, 32)  # [B, C, H, W], C = the last stage width
    theirs = library(GradCAM, model, model.stages[-1], images, [4])
    evidence = gradient_evidence(model, images, torch.tensor([4]))
    assert_matches_library(gradcam(evidence), explain(model, images, [4], "gradcam"), theirs, evidence, raw_scale=channels(evidence))


def test_nhwc_models_are_permuted_for_the_maps_only(images):
    """timm models that emit NHWC (output_fmt) — e.g. MambaOut — give the same Grad-CAM as the
    library with the usual reshape transform; the head still sees its own layout."""
    model = tiny("test_mambaout")
    assert model.output_fmt == "NHWC"
    targets = [0, 5, 9]
    theirs = library(GradCAM, model, model.stages[-1], images, targets, reshape=lambda t: t.permute(0, 3, 1, 2))
    evidence = gradient_evidence(model, images, torch.tensor(targets))
    assert_matches_library(gradcam(evidence), explain(model, images, targets, "gradcam"), theirs, evidence, raw_scale=channels(evidence))


# ------------------------------------------------------------------ what the split guarantees


def test_parameters_get_no_gradients_and_keep_their_flags(images):
    model = tiny("test_convnext")
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 3 != 0)  # a mix, as in a partly frozen model
    flags = [p.requires_grad for p in model.parameters()]
    model.train()
    modes = [m.training for m in model.modules()]
    for method in ("gradcam", "threshold-gradcam", "gradcam++", "eigengradcam"):
        explain(model, images, None, method)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes


def test_a_model_in_train_mode_is_explained_in_eval_mode(images):
    model = tiny("test_resnet")
    expected = explain(model, images, [1, 2, 3], "gradcam")
    model.train()
    assert torch.equal(explain(model, images, [1, 2, 3], "gradcam"), expected)
    assert model.training


@pytest.mark.parametrize("method", ["gradcam", "threshold-gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigengradcam"])
def test_batch_independence_and_determinism(method, images):
    model = tiny("test_convnext")
    batch = explain_batch(model, images, [3, 3, 3], method)
    alone = explain_batch(model, images[1:2], [3], method)
    # one image alone and in a batch: the same products summed in other orders (was rtol 1e-4, atol 1e-5, tuned)
    logit_atol = network_relative(model) * float(batch.logits[1].abs().max())
    assert bool(((alone.logits[0] - batch.logits[1]).abs() <= logit_atol).all())
    atol = float(propagated_atol(GRADIENT_METHODS[method], gradient_evidence(model, images[1:2], torch.tensor([3])), model)[0])
    assert bool(((alone.maps[0] - batch.maps[1]).abs() <= atol).all())
    assert torch.equal(explain(model, images, [3, 3, 3], method), batch.maps)


def test_propagated_atol_covers_perturbations_of_the_size_it_assumes(images):
    """cams.propagated_atol: A and G moved by up to network_relative of their largest entry (random
    signs) move each method's map by no more than the bound."""
    model = tiny("test_convnext")
    evidence = gradient_evidence(model, images, torch.tensor([1, 2, 3]))
    a, g = evidence.activations, evidence.gradients
    for name in ("gradcam", "threshold-gradcam", "gradcam++", "layercam"):
        method = GRADIENT_METHODS[name]
        bound = propagated_atol(method, evidence, model)
        base = method(evidence)
        for seed in range(3):
            generator = torch.Generator().manual_seed(seed)
            da = network_relative(model) * a.abs().amax((1, 2, 3), keepdim=True) * (2 * torch.rand(a.shape, generator=generator) - 1)
            dg = (
                network_relative(model, passes=2)
                * g.abs().amax((1, 2, 3), keepdim=True)
                * (2 * torch.rand(g.shape, generator=generator) - 1)
            )
            moved = method(Evidence(a + da, g + dg, evidence.logits, evidence.targets))
            assert bool(((moved - base).abs().flatten(1).amax(1).double() <= bound).all()), name


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) in (torch.Tensor, nn.Parameter))


def test_no_hooks_graphs_or_tensors_left_behind(images):
    """Memory stays flat over many batches: after a warm-up, further calls leave no extra live
    tensors (no retained graph, no cached activations) and no hooks on the model."""
    model = tiny("test_resnet")
    explain(model, images, None, "threshold-gradcam")
    before = _live_tensors()
    for _ in range(5):
        maps = explain(model, images, None, "threshold-gradcam")
        assert maps.grad_fn is None and not maps.requires_grad
    del maps
    assert _live_tensors() <= before
    assert _hooks(model) == 0


# ------------------------------------------------------------------ bad input


def test_targets_are_checked(images):
    model = tiny("test_resnet")
    with pytest.raises(ExplainerError, match=r"target class 10 is out of range for a model with 10 classes \(valid: 0..9\)"):
        explain(model, images, 10)
    with pytest.raises(ExplainerError, match="got 2 targets for 3 images"):
        explain(model, images, [1, 2])
    with pytest.raises(ExplainerError, match="integer class indices"):
        explain(model, images, torch.tensor([1.0, 2.0, 3.0]))


def test_images_are_checked():
    model = tiny("test_resnet")
    with pytest.raises(ExplainerError, match=r"\[B, 3, H, W\]"):
        explain(model, torch.zeros(3, 3))
    with pytest.raises(ExplainerError, match="normalised floats"):
        explain(model, torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    one = torch.randn(3, 64, 64)
    assert explain(model, one).shape == (1, 64, 64)


class Tokens(nn.Module):
    """forward_features gives [B, N, C] tokens, and nothing says how they lie on a grid."""

    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.fc = nn.Linear(3, 8), nn.Linear(8, 10)

    def forward_features(self, x):
        return self.proj(x.flatten(2).transpose(1, 2))

    def forward_head(self, a):
        return self.fc(a.mean(1))


def test_models_without_a_spatial_feature_map_are_refused(images):
    with pytest.raises(
        ExplainerError, match=r"not a spatial feature map \[B, C, H, W\], and it is no ViT/DeiT .*use saliency or occlusion"
    ):
        explain(Tokens(), images, None, "gradcam")
    with pytest.raises(ExplainerError, match="forward_features/forward_head"):
        explain(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), images, None, "gradcam")


def test_explaining_under_inference_mode_gives_the_same_maps(images):
    model = tiny("test_resnet")
    expected = explain(model, images, [1, 2, 3], "threshold-gradcam")
    with torch.inference_mode():
        inside = explain(model, images.clone(), [1, 2, 3], "threshold-gradcam")
    assert torch.equal(inside, expected)

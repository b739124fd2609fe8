"""CAMs on token transformers: a ViT block's patch tokens on their grid, equal to pytorch-grad-cam's recipe."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM
from torch import nn

from alignbench.errors import ExplainerError
from alignbench.explainers import check_applicable, explain, explain_batch
from alignbench.explainers._gradient import GRADIENT_METHODS, gradcam
from alignbench.explainers._split import gradient_evidence
from alignbench.explainers._tokens import token_evidence
from alignbench.testing.cams import assert_matches_library, library_cam

SIZE = 64  # test_vit at 64x64: patch 16, a 4x4 grid of patch tokens


def vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=SIZE, **kwargs).eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return vit()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def vit_reshape_transform(tensor, height=SIZE // 16, width=SIZE // 16):
    """pytorch-grad-cam usage_examples/vit_example.py ``reshape_transform``, line for line."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    result = result.transpose(2, 3).transpose(1, 2)
    return result


@pytest.mark.parametrize("method, cam_class", [("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("layercam", LayerCAM)])
def test_cams_on_a_vit_equal_pytorch_grad_cam_with_the_reshape_transform(method, cam_class, model, images):
    """The library on the unmodified model hooked at blocks[-1].norm1 (its ViT recipe, full graph,
    every weight requiring grad) against ours (the graph from that norm1 only)."""
    targets = [3, 7]
    theirs = library_cam(cam_class, model, model.blocks[-1].norm1, images, targets, reshape=vit_reshape_transform)
    evidence = token_evidence(model, images, torch.tensor(targets))
    assert evidence.activations.shape == (2, model.embed_dim, 4, 4)
    ours = explain(model, images, targets, method)
    assert ours.shape == (2, SIZE, SIZE) and ours.dtype == torch.float32
    hw = evidence.activations.shape[2] * evidence.activations.shape[3]
    weight_factor = hw / 2 if method == "gradcam++" else 1.0
    raw_scale = evidence.activations.shape[1] if method == "gradcam" else 1.0  # ours: the paper's channel mean
    assert_matches_library(GRADIENT_METHODS[method](evidence), ours, theirs, evidence, weight_factor, raw_scale=raw_scale)


def test_the_class_token_is_excluded_and_the_patches_lie_on_their_grid(model, images):
    """A is exactly norm1's output without token 0, token 1 + r·w + c at grid row r, column c."""
    captured = []
    handle = model.blocks[-1].norm1.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        evidence = token_evidence(model, images, torch.tensor([1, 2]))
    finally:
        handle.remove()
    tokens = captured[0]  # [B, 1 + 16, C]
    a = evidence.activations
    for r in range(4):
        for c in range(4):
            assert torch.equal(a[:, :, r, c], tokens[:, 1 + r * 4 + c])
    # a class token that moves changes no patch token's activation, only the maps through attention
    assert not any(torch.equal(tokens[:, 0], a[:, :, r, c]) for r in range(4) for c in range(4))


def test_register_tokens_are_dropped_too(images):
    model = vit(reg_tokens=2)
    assert model.num_prefix_tokens == 3
    captured = []
    handle = model.blocks[-1].norm1.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        evidence = token_evidence(model, images, torch.tensor([1, 2]))
    finally:
        handle.remove()
    assert torch.equal(evidence.activations, captured[0][:, 3:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2))
    theirs = library_cam(GradCAM, model, model.blocks[-1].norm1, images, [1, 2], reshape=lambda t: vit_reshape_transform(t[:, 2:]))
    assert_matches_library(gradcam(evidence), explain(model, images, [1, 2], "gradcam"), theirs, evidence, raw_scale=model.embed_dim)


def test_layer_picks_the_block(model, images):
    targets = [0, 5]
    for layer, block in ((0, 0), (2, 2), (-3, 3), (-1, 5)):
        captured = []
        handle = model.blocks[block].norm1.register_forward_hook(lambda _m, _i, out, into=captured: into.append(out.detach()))
        try:
            evidence = token_evidence(model, images, torch.tensor(targets), layer=layer)
        finally:
            handle.remove()
        assert torch.equal(evidence.activations, captured[0][:, 1:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2))
        theirs = library_cam(GradCAM, model, model.blocks[block].norm1, images, targets, reshape=vit_reshape_transform)
        ours = explain(model, images, targets, "gradcam", layer=layer)
        assert_matches_library(gradcam(evidence), ours, theirs, evidence, raw_scale=model.embed_dim)
    assert torch.equal(explain(model, images, targets, "gradcam", layer=-1), explain(model, images, targets, "gradcam"))
    assert not torch.equal(explain(model, images, targets, "gradcam", layer=0), explain(model, images, targets, "gradcam"))


@pytest.mark.parametrize("method", ["eigencam", "scorecam", "ablationcam"])
def test_library_methods_on_a_vit_are_the_library_with_the_reshape_transform(method, model, images):
    """The library's own ViT recipe (AblationCAM with its AblationLayerVit), hooked at block 2's norm1."""
    from pytorch_grad_cam import AblationCAM, ScoreCAM
    from pytorch_grad_cam.ablation_layer import AblationLayerVit
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    images, targets = (images[:1], [1]) if method != "eigencam" else (images, [1, 2])  # one image where a forward per channel
    ours = explain(model, images, targets, method, layer=2)
    cam_class, kwargs = {
        "eigencam": (EigenCAM, {}),
        "scorecam": (ScoreCAM, {}),
        "ablationcam": (AblationCAM, {"ablation_layer": AblationLayerVit()}),
    }[method]
    cam = cam_class(model, [model.blocks[2].norm1], reshape_transform=vit_reshape_transform, **kwargs)
    try:
        theirs = cam(images, [ClassifierOutputTarget(t) for t in targets])
    finally:
        cam.activations_and_grads.release()
    # the same library code on the same activations (these methods need no gradient): equal to the bit
    np.testing.assert_array_equal(ours.numpy(), theirs)
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_maps_are_in_the_input_geometry_and_leave_nothing_behind(images):
    model = vit(dynamic_img_size=True)
    for method in ("gradcam", "threshold-gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigengradcam"):
        wide = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(3))
        result = explain_batch(model, wide, None, method)
        assert result.maps.shape == (2, 48, 80) and result.maps.dtype == torch.float32, method
        assert torch.equal(result.targets, result.logits.argmax(1))
    assert all(p.grad is None for p in model.parameters()) and all(p.requires_grad for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_swin_is_explained_at_forward_features_permuted_from_nhwc():
    """Swin's forward_features is already a spatial map (NHWC, the final norm): the library with the
    usual permuting reshape_transform at that norm, as swinT_example.py reshapes its hooked tokens."""
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(img_size=32, patch_size=4, window_size=2, embed_dim=16, depths=(1, 1), num_heads=(1, 2), num_classes=10).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    theirs = library_cam(GradCAM, model, model.norm, images, [2, 6], reshape=lambda t: t.permute(0, 3, 1, 2))
    evidence = gradient_evidence(model, images, torch.tensor([2, 6]))
    assert_matches_library(
        gradcam(evidence), explain(model, images, [2, 6], "gradcam"), theirs, evidence, raw_scale=evidence.activations.shape[1]
    )
    with pytest.raises(ExplainerError, match="--layer picks a block of a token transformer"):
        explain(model, images, None, "gradcam", layer=0)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("layer", [6, -7])
def test_a_layer_outside_the_model_is_one_line(model, images, layer):
    with pytest.raises(ExplainerError, match=rf"layer {layer} is outside test_vit's 6 blocks; use 0..5"):
        check_applicable(model, "gradcam", layer=layer)
    with pytest.raises(ExplainerError, match=rf"layer {layer} is outside"):
        explain(model, images, None, "scorecam", layer=layer)


def test_a_layer_on_a_cnn_is_refused(images):
    torch.manual_seed(0)
    cnn = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    with pytest.raises(ExplainerError, match="--layer picks a block of a token transformer"):
        check_applicable(cnn, "threshold-gradcam", layer=2)


def test_tokens_that_cannot_be_laid_on_a_grid_are_refused_naming_why(images):
    class MergeLast(nn.Module):  # token merging: the last two patch tokens become one
        def forward(self, x):
            return torch.cat([x[:, :-2], x[:, -2:].mean(1, keepdim=True)], dim=1)

    merged = vit()
    merged.norm_pre = MergeLast()
    with pytest.raises(
        ExplainerError, match=r"gives 16 tokens, which are not 1 prefix token\(s\) and the 4x4 patch grid .*cannot be laid on a grid"
    ):
        explain(merged, images, None, "gradcam")

    class NoGrid(nn.Module):  # a patch embedding that declares no grid
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    other = vit()
    other.patch_embed = NoGrid(other.patch_embed)
    with pytest.raises(ExplainerError, match=r"declares no grid_size, so its tokens cannot be laid on one"):
        check_applicable(other, "gradcam")


@pytest.mark.parametrize("method", ["fullgrad", "shapleycam"])
def test_library_methods_that_need_the_whole_network_are_refused_on_a_vit(model, method):
    with pytest.raises(ExplainerError, match=rf"{method} cannot explain test_vit \(a token transformer\)"):
        check_applicable(model, method)


def test_deit_distilled_drops_its_class_and_distillation_tokens(images):
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=10, img_size=SIZE, depth=2).eval()
    assert deit.num_prefix_tokens == 2
    theirs = library_cam(GradCAM, deit, deit.blocks[-1].norm1, images, [4, 8], reshape=lambda t: vit_reshape_transform(t[:, 1:]))
    evidence = token_evidence(deit, images, torch.tensor([4, 8]))
    assert_matches_library(gradcam(evidence), explain(deit, images, [4, 8], "gradcam"), theirs, evidence, raw_scale=deit.embed_dim)

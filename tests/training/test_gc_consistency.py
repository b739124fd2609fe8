"""Grad-CAM consistency (Pillai & Pirsiavash, AAAI 2021): the authors' formula, known answers, second-order gradients."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from alignbench.errors import TrainingError
from alignbench.testing.tolerance import float32_bound, network_relative
from alignbench.training import build_composite, gc_consistency_loss, paste_into_quadrants
from alignbench.training._gc_consistency import EPS

# ------------------------------------------------------- the authors' code, transcribed (CPU instead of .cuda())


def _their_compute_gradcam(output, feats, target):
    """utils.compute_gradcam of UMBCvision/Explainable-Models-with-Consistent-Interpretations, line for line."""
    eps = 1e-8
    target = target.cpu().numpy()
    one_hot = np.zeros((output.shape[0], output.shape[-1]), dtype=np.float32)
    indices_range = np.arange(output.shape[0])
    one_hot[indices_range, target[indices_range]] = 1
    one_hot = torch.from_numpy(one_hot)
    one_hot.requires_grad = True
    one_hot_cuda = torch.sum(one_hot * output)
    (dy_dz1,) = torch.autograd.grad(one_hot_cuda, feats, grad_outputs=torch.ones(one_hot_cuda.size()), retain_graph=True, create_graph=True)
    gcam512_1 = dy_dz1 * feats
    gradcam = gcam512_1.sum(dim=1)
    gradcam = torch.nn.ReLU(inplace=True)(gradcam)
    spatial_sum1 = gradcam.sum(dim=[1, 2]).unsqueeze(-1).unsqueeze(-1)
    gradcam = (gradcam / (spatial_sum1 + eps)) + eps
    return gradcam


def _get_next_index(quad_index_start_dict, index):
    for i in range(index + 1, 4):
        if i in quad_index_start_dict:
            return i
    return "end"


def _their_gcam_loss(model, images, composite_images, targets, gt_quadrants):
    """resnet_multigpu.ResNet._forward's consistency part, with layer4 → forward_features and
    pool + fc → forward_head."""
    sorted_indices = torch.argsort(gt_quadrants)
    gt_quadrants = gt_quadrants[sorted_indices]
    images = images[sorted_indices]
    targets = targets[sorted_indices]
    composite_images = composite_images[sorted_indices]
    images_feats = model.forward_features(images)
    images_outputs = model.forward_head(images_feats)
    composite_images_feats = model.forward_features(composite_images)
    composite_images_outputs = model.forward_head(composite_images_feats)
    orig_gradcam_mask = _their_compute_gradcam(images_outputs, images_feats, targets)
    feats_spatial_size = images_feats.shape[-1]
    gt_quadrants_np = gt_quadrants.cpu().numpy()
    quad_index_start_dict = {}
    for quad_index in range(0, 4):
        quad_position = np.where(gt_quadrants_np == quad_index)[0]
        if len(quad_position) > 0:
            quad_index_start_dict[quad_index] = quad_position[0]
    quad_index_start_dict["end"] = images.shape[0]
    gradcam_gt_mask = torch.zeros((images.shape[0], 2 * feats_spatial_size, 2 * feats_spatial_size))
    for j in range(2):
        for k in range(2):
            index = j * 2 + k
            if index not in quad_index_start_dict:
                continue
            next_index = _get_next_index(quad_index_start_dict, index)
            gradcam_gt_mask[
                quad_index_start_dict[index] : quad_index_start_dict[next_index],
                j * feats_spatial_size : (j + 1) * feats_spatial_size,
                k * feats_spatial_size : (k + 1) * feats_spatial_size,
            ] = orig_gradcam_mask[quad_index_start_dict[index] : quad_index_start_dict[next_index], :, :]
    composite_gradcam_mask = _their_compute_gradcam(composite_images_outputs, composite_images_feats, targets)
    return nn.L1Loss()(composite_gradcam_mask, gradcam_gt_mask)


def _their_order(quadrants) -> torch.Tensor:
    """The batch order _their_gcam_loss computes in: its own argsort of the quadrants (ties included)."""
    return torch.argsort(torch.as_tensor(quadrants))


# --------------------------------------------------------------------------------------- fixtures


class Patches(nn.Module):
    """A timm-shaped classifier whose features are local: a patchify conv (stride = kernel, no bias),
    ReLU, global average pooling and a linear head. A zero patch gives zero features, and a patch's
    features do not depend on its neighbours — so the composite's map is known exactly."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel_size=8, stride=8, bias=False)
        self.fc = nn.Linear(6, classes)

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def forward_head(self, a):
        return self.fc(a.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _batch(images: torch.Tensor, others: torch.Tensor, quadrants: list[int]) -> torch.Tensor:
    return torch.stack([build_composite(image, list(other), q) for image, other, q in zip(images, others, quadrants)])


@pytest.fixture(scope="module")
def tiny_timm() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", pretrained=False).eval()


# ------------------------------------------------------------------------------------------ tests


def test_equals_the_authors_formula_on_a_timm_model(tiny_timm) -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 64, 64, generator=generator)
    others = torch.randn(4, 3, 3, 64, 64, generator=generator)
    quadrants = [2, 0, 3, 0]  # unsorted and one quadrant missing: their sort-and-slice path
    labels = torch.tensor([3, 17, 999, 0])
    composites = _batch(images, others, quadrants)
    theirs = _their_gcam_loss(tiny_timm, images, composites, labels, torch.tensor(quadrants))
    # Ours gets the batch in the order their code sorts it into: the network then sees the same
    # batches on both sides, so A and G are the same float32 values (in another order a batch's
    # kernels round differently, and dividing by the map's sum amplifies that beyond any useful bound).
    order = _their_order(quadrants)
    ours = gc_consistency_loss(tiny_timm, images[order], labels[order], composites[order], torch.tensor(quadrants)[order])
    assert ours.ndim == 0
    # From the same A and G every map entry is the same sequence of roundings on both sides (the
    # one-hot and gather give the same ∂y/∂logits, 0s and 1s; slicing and padding place the same
    # values); only the L1 mean's sum of N non-negative terms may accumulate in another order.
    n_terms = composites.shape[0] * tiny_timm.forward_features(composites[:1]).shape[-2:].numel()  # B·2h·2w
    torch.testing.assert_close(ours, theirs, rtol=float32_bound(n_terms, 1.0), atol=0)
    assert ours.item() > 0


def test_equals_the_authors_formula_in_its_gradients(tiny_timm) -> None:
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(3, 3, 64, 64, generator=generator)
    composites = _batch(images, torch.randn(3, 3, 3, 64, 64, generator=generator), [1, 3, 1])
    labels, quadrants = torch.tensor([5, 6, 7]), torch.tensor([1, 3, 1])
    parameters = [p for p in tiny_timm.parameters()]
    order = _their_order(quadrants)  # the same batches through the network on both sides (see above)
    ours_loss = gc_consistency_loss(tiny_timm, images[order], labels[order], composites[order], quadrants[order])
    ours = torch.autograd.grad(ours_loss, parameters, allow_unused=True)
    theirs = torch.autograd.grad(_their_gcam_loss(tiny_timm, images, composites, labels, quadrants), parameters, allow_unused=True)
    scale = max(float(b.abs().max()) for b in theirs if b is not None)
    # Each parameter's gradient sums its paths through four passes over the network (the forward,
    # the backward that gives G with create_graph, and the backward through both), and autograd may
    # accumulate a tensor's incoming gradients in another order in the two graphs: network_relative
    # of four passes, on the largest gradient (a missing second-order term is O(1) of it).
    atol = network_relative(tiny_timm, passes=4) * scale
    for a, b in zip(ours, theirs):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=atol)


def test_zero_when_the_composite_map_is_the_pasted_mask_by_construction() -> None:
    # Local features and zero images in the other three cells: map(composite) is exactly map(image)
    # in its quadrant (the 4× smaller pooled gradient cancels in the normalisation) and 0 elsewhere.
    # The formula then leaves only its +1e-8 floor in the three empty quadrants: GC = ¾ · 1e-8.
    # (float64, and weights large enough that the +1e-8 in the normaliser, which the 4× smaller
    # composite sum feels 4× more, is far below that.)
    torch.manual_seed(0)
    model = Patches().double()
    with torch.no_grad():
        model.conv.weight.mul_(100)
        model.fc.weight.mul_(100)
    images = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    composites = _batch(images, torch.zeros(4, 3, 3, 16, 16, dtype=torch.float64), [0, 1, 2, 3])
    loss = gc_consistency_loss(model, images, torch.tensor([0, 1, 2, 3]), composites, torch.tensor([0, 1, 2, 3]))
    # not a rounding bound (float64 is ~1e-16 of it): rel 1e-3 leaves room for the +1e-8 in the normaliser (above)
    assert loss.item() == pytest.approx(0.75 * EPS, rel=1e-3)


def test_positive_when_the_other_images_draw_the_explanation() -> None:
    torch.manual_seed(0)
    model = Patches()
    images = torch.rand(4, 3, 16, 16)
    composites = _batch(images, torch.rand(4, 3, 3, 16, 16), [0, 1, 2, 3])
    loss = gc_consistency_loss(model, images, torch.tensor([0, 1, 2, 3]), composites, torch.tensor([0, 1, 2, 3]))
    assert loss.item() > 1e-3


def test_the_gradient_trains_through_the_grad_cam_gradient_itself() -> None:
    # The classifier weights enter the maps only through ∂y/∂A (A does not depend on them): a
    # non-zero gradient there exists only because ∂y/∂A was taken with create_graph=True.
    torch.manual_seed(0)
    model = Patches()
    images = torch.rand(4, 3, 16, 16)
    composites = _batch(images, torch.rand(4, 3, 3, 16, 16), [3, 2, 1, 0])
    loss = gc_consistency_loss(model, images, torch.tensor([0, 1, 2, 3]), composites, torch.tensor([3, 2, 1, 0]))
    loss.backward()
    assert model.fc.weight.grad is not None and float(model.fc.weight.grad.abs().sum()) > 0
    assert float(model.conv.weight.grad.abs().sum()) > 0


def test_a_frozen_backbone_still_gives_the_head_a_gradient() -> None:
    torch.manual_seed(0)
    model = Patches()
    model.conv.requires_grad_(False)
    images = torch.rand(2, 3, 16, 16)
    composites = _batch(images, torch.rand(2, 3, 3, 16, 16), [0, 3])
    gc_consistency_loss(model, images, torch.tensor([1, 2]), composites, torch.tensor([0, 3])).backward()
    assert float(model.fc.weight.grad.abs().sum()) > 0


def test_composite_places_the_image_at_its_quadrant_and_the_others_in_order() -> None:
    image = torch.full((3, 2, 3), 9.0)
    others = [torch.full((3, 2, 3), float(i)) for i in range(3)]
    expected_cells = {0: (0, 0), 1: (0, 3), 2: (2, 0), 3: (2, 3)}  # (top, left) of each quadrant
    for quadrant, (top, left) in expected_cells.items():
        grid = build_composite(image, others, quadrant)
        assert grid.shape == (3, 4, 6)
        assert torch.equal(grid[:, top : top + 2, left : left + 3], image)
        rest = [q for q in range(4) if q != quadrant]
        for value, q in enumerate(rest):
            top, left = expected_cells[q]
            assert torch.equal(grid[:, top : top + 2, left : left + 3], others[value])


def test_composite_refuses_what_it_would_have_to_resize() -> None:
    image = torch.zeros(3, 4, 4)
    with pytest.raises(TrainingError, match="share the image's shape"):
        build_composite(image, [torch.zeros(3, 4, 4), torch.zeros(3, 5, 4), torch.zeros(3, 4, 4)], 0)
    with pytest.raises(TrainingError, match="quadrant"):
        build_composite(image, [image] * 3, 4)
    with pytest.raises(TrainingError, match="3 other images"):
        build_composite(image, [image] * 2, 0)


def test_paste_matches_slicing() -> None:
    maps = torch.rand(4, 2, 3)
    pasted = paste_into_quadrants(maps, torch.tensor([0, 1, 2, 3]))
    for i, (top, left) in enumerate([(0, 0), (0, 3), (2, 0), (2, 3)]):
        expected = torch.zeros(4, 6)
        expected[top : top + 2, left : left + 3] = maps[i]
        assert torch.equal(pasted[i], expected)


def test_bad_shapes_are_one_clear_error() -> None:
    model = Patches()
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(TrainingError, match=r"\[B, C, 2H, 2W\]"):
        gc_consistency_loss(model, images, torch.tensor([0, 1]), torch.rand(2, 3, 16, 32), torch.tensor([0, 1]))
    with pytest.raises(TrainingError, match="0..3"):
        gc_consistency_loss(model, images, torch.tensor([0, 1]), torch.rand(2, 3, 32, 32), torch.tensor([0, 4]))

"""Grad-CAM consistency (Pillai & Pirsiavash, "Explainable Models with Consistent Interpretations", AAAI 2021).

An image is pasted into one quadrant of a 2×2 grid whose other three cells hold images of other
classes. The model's Grad-CAM of the image's class on the grid should be the image's own Grad-CAM in
its cell and nothing elsewhere; the L1 distance between the two is the loss. As in the authors' code
(UMBCvision/Explainable-Models-with-Consistent-Interpretations, ``utils.compute_gradcam`` and
``resnet_multigpu.ResNet._forward``):

    map(x) = ReLU(Σ_c ∂y_label/∂A_c ⊙ A_c)          element-wise Grad-CAM, A = forward_features(x)
    map   ← map / (Σ_hw map + 1e-8) + 1e-8
    mask  = zeros(2h, 2w) with map(image) in quadrant q   (not detached)
    GC    = mean |map(composite) − mask|              (nn.L1Loss)

∂y/∂A is taken with ``create_graph=True``, so the loss trains the parameters through the gradient
itself (second order). Quadrants: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right (their
``index = row * 2 + column``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignbench.errors import TrainingError
from alignbench.explainers import Split, split_model

# utils.compute_gradcam: eps = 1e-8, both in the denominator and added to the normalised map.
EPS = 1e-8


def consistency_map(features: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
    """The authors' normalised element-wise Grad-CAM [B, h, w] of ``labels`` (differentiable, second order)."""
    score = logits.gather(1, labels.view(-1, 1)).sum()  # Σ_i y_i[label_i] = sum(one_hot * output)
    (gradients,) = torch.autograd.grad(score, features, create_graph=True)
    cam = torch.relu((gradients * features).sum(dim=1))
    return cam / (cam.sum(dim=(1, 2), keepdim=True) + EPS) + EPS


def paste_into_quadrants(maps: Tensor, quadrants: Tensor) -> Tensor:
    """[B, h, w] maps, each placed in quadrant ``quadrants[i]`` of a zero [2h, 2w] grid (differentiable)."""
    rows, cols = (quadrants // 2).tolist(), (quadrants % 2).tolist()
    h, w = maps.shape[-2:]
    # F.pad: (left, right, top, bottom)
    return torch.stack([F.pad(m, (c * w, (1 - c) * w, r * h, (1 - r) * h)) for m, r, c in zip(maps, rows, cols)])


def build_composite(image: Tensor, others: Sequence[Tensor], quadrant: int) -> Tensor:
    """The 2×2 grid [3, 2H, 2W]: ``image`` at ``quadrant``, the three ``others`` in the other cells in
    quadrant order; nothing is resized (every image must have ``image``'s shape)."""
    if not 0 <= int(quadrant) <= 3:
        raise TrainingError(f"quadrant must be 0..3 (top-left, top-right, bottom-left, bottom-right), got {quadrant}")
    if len(others) != 3:
        raise TrainingError(f"a composite needs 3 other images, got {len(others)}")
    if any(other.shape != image.shape for other in others):
        shapes = ", ".join(str(tuple(other.shape)) for other in others)
        raise TrainingError(f"composite cells must share the image's shape {tuple(image.shape)}; got {shapes}")
    cells = list(others)
    cells.insert(int(quadrant), image)
    return torch.cat([torch.cat(cells[:2], dim=-1), torch.cat(cells[2:], dim=-1)], dim=-2)


def features_of(split: Split, images: Tensor) -> Tensor:
    """A for ``images``; a leaf that requires grad when nothing before it trains (a frozen backbone),
    so that ∂y/∂A exists."""
    features = split.features(images)
    return features if features.requires_grad else features.requires_grad_(True)


def _check_batch(images: Tensor, labels: Tensor, composites: Tensor, quadrants: Tensor) -> None:
    batch, _, height, width = images.shape
    if composites.shape != (batch, images.shape[1], 2 * height, 2 * width):
        raise TrainingError(
            f"composites must be [B, C, 2H, 2W] = {(batch, images.shape[1], 2 * height, 2 * width)} for images "
            f"{tuple(images.shape)}; got {tuple(composites.shape)}"
        )
    if labels.shape != (batch,) or quadrants.shape != (batch,):
        raise TrainingError(f"labels and quadrants must be [B] = [{batch}]; got {tuple(labels.shape)} and {tuple(quadrants.shape)}")
    if bool(((quadrants < 0) | (quadrants > 3)).any()):
        raise TrainingError("quadrants must be 0..3 (top-left, top-right, bottom-left, bottom-right)")


def consistency_from_features(
    split: Split, features: Tensor, logits: Tensor, labels: Tensor, composites: Tensor, quadrants: Tensor
) -> Tensor:
    """GC from the images' features and logits already computed (the training step shares them with
    the cross-entropy); the composites go through the model here."""
    image_maps = consistency_map(features, logits, labels)
    composite_features = features_of(split, composites)
    composite_maps = consistency_map(composite_features, split.head(composite_features), labels)
    h, w = image_maps.shape[-2:]
    if composite_maps.shape[-2:] != (2 * h, 2 * w):
        raise TrainingError(
            f"the composite's feature map is {tuple(composite_maps.shape[-2:])}, not twice the image's {(h, w)}: "
            "Grad-CAM consistency needs an input size the model's strides divide evenly (e.g. --img-size 224)"
        )
    mask = paste_into_quadrants(image_maps, quadrants.to(image_maps.device))
    return F.l1_loss(composite_maps, mask)


def gc_consistency_loss(model: nn.Module, images: Tensor, labels: Tensor, composites: Tensor, quadrants: Tensor) -> Tensor:
    """Pillai & Pirsiavash's Grad-CAM consistency loss (a scalar; see the module docstring).

    ``images`` [B, 3, H, W]; ``labels`` [B] class indices; ``composites`` [B, 3, 2H, 2W], each a 2×2
    grid holding ``images[i]`` at ``quadrants[i]`` (0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right; see ``build_composite``). A is the output of the model's ``forward_features``.
    """
    labels, quadrants = labels.long().view(-1), torch.as_tensor(quadrants).long().view(-1)
    _check_batch(images, labels, composites, quadrants)
    split = split_model(model)
    with torch.enable_grad():
        features = features_of(split, images)
        return consistency_from_features(split, features, split.head(features), labels, composites, quadrants)

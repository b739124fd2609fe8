"""Our gradient-weighted CAMs against pytorch-grad-cam, with bounds derived from the computation.

Two comparisons, both float32 on each side but summed in different orders (see ``tolerance``):

- the raw map, before any normalisation: ReLU(Σ_c w_c·A_c) at A's resolution, ours against the
  library's ``get_cam_image`` on the activations and gradients it captured itself. Absolute,
  so it holds for every image, including random-init maps that nearly cancel;
- the returned map after min-max: the library divides by the map's range r, so its bound grows
  as 1/r and is only a check where it stays small (``MEANINGFUL``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from alignbench.testing.tolerance import float32_bound, float32_relative, network_relative

MEANINGFUL = 0.05  # a bound above 5% of the map's scale no longer tells a wrong weight from rounding


@dataclass
class LibraryCam:
    maps: np.ndarray  # [B, H, W]: the library's output (ReLU, min-max, cv2 resize)
    raw: np.ndarray  # [B, h, w]: ReLU(get_cam_image(A, G)), before its scale_cam_image
    activations: torch.Tensor  # A and G as the library captured them (after reshape_transform)
    gradients: torch.Tensor


def library_cam(cam_class, model, layer, images, targets, reshape=None) -> LibraryCam:
    """pytorch-grad-cam on the unmodified model hooked at ``layer``: its map, and its raw map
    recomputed with its own ``get_cam_image`` on the A and G it captured (as compute_cam_per_layer does)."""
    cam = cam_class(model, [layer], reshape_transform=reshape)
    try:
        chosen = [ClassifierOutputTarget(int(t)) for t in targets]
        maps = cam(images, chosen)
        a = cam.activations_and_grads.activations[0].clone()
        g = cam.activations_and_grads.gradients[0].clone()
        raw = np.maximum(cam.get_cam_image(images, layer, chosen, a.numpy(), g.numpy(), False), 0)
        return LibraryCam(maps, raw, a, g)
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


def _magnitude(activations, gradients, weight_factor: float) -> torch.Tensor:
    """[B, h, w] bound on Σ_c |w_c|·|A_c| (float64): |w_c| ≤ weight_factor·max_ij|G_c| (1 for a
    mean, an element or a convex combination of the gradients; HW/2 for Grad-CAM++, whose α ≤ 1/2
    where A ≥ 0)."""
    a, g = activations.double(), gradients.double()
    return (weight_factor * g.abs().amax((2, 3), keepdim=True) * a.abs()).sum(1)


def raw_atol(activations, gradients, weight_factor: float = 1.0) -> torch.Tensor:
    """[B, h, w] bound on |ours_raw - library_raw|: a sum over C channels of terms w_c·A_c, each
    weight itself a sum over HW positions, so float32_bound(C + HW + 8, Σ_c |w_c||A_c|) (8: α's,
    the mean's and the ReLU's own roundings). Absolute: no division by anything the map's values decide."""
    c, hw = activations.shape[1], activations.shape[2] * activations.shape[3]
    return float32_bound(c + hw + 8, 1.0) * _magnitude(activations, gradients, weight_factor)


def library_atol(maps, activations, gradients, weight_factor: float = 1.0) -> np.ndarray:
    """Per-image bound [B, 1, 1] on |minmax(ours) - the library's map|:

    - the raw maps differ by ≤ the largest ``raw_atol`` of the image;
    - min-max by the range r of our upsampled map: the value, the low and the high each move, so
      ≤ 4·error/r; the library divides by (1e-7 + max) (its scale_cam_image), ≤ 1e-7/r more;
    - the two bilinear resizes (torch, cv2), the subtraction and the division: 16 roundings of 1.

    Where a random-init map nearly cancels (r ≪ Σ|w·A|) this exceeds ``MEANINGFUL`` (even inf for
    r = 0) and checks nothing; the raw comparison covers those images."""
    error = raw_atol(activations, gradients, weight_factor).flatten(1).amax(1).numpy()
    flat = torch.as_tensor(maps).double().flatten(1)
    r = (flat.amax(1) - flat.amin(1)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(r > 0, 4 * error / np.where(r > 0, r, 1) + 1e-7 / np.where(r > 0, r, 1), np.inf)
    return (bound + float32_relative(16))[:, None, None]


def minmax(maps) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float64)
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    return np.where(high > low, (maps - low) / np.where(high > low, high - low, 1), 0.0)


def assert_matches_library(ours_raw, ours, theirs: LibraryCam, evidence, weight_factor: float = 1.0, raw_scale: float = 1.0) -> None:
    """Ours equals the library's CAM: the raw maps for every image (``ours_raw``·``raw_scale`` — C
    for the paper's channel mean against the library's sum — within ``raw_atol``), and the returned
    maps after min-max wherever that bound is meaningful. Our evidence must be the library's
    A and G: the same forward and backward, so within one float32 rounding of their largest entry
    each (the backward may accumulate its paths in another order)."""
    a, g = theirs.activations.double(), theirs.gradients.double()
    assert evidence.activations.shape == a.shape and evidence.gradients.shape == g.shape
    for ours_t, lib in ((evidence.activations.double(), a), (evidence.gradients.double(), g)):
        # a backward's gradient is a sum over the graph's paths: compare with the same n·EPS scale
        # as the map, on each image's largest entry (a wrong layer differs by O(1) of it)
        scale = lib.abs().flatten(1).amax(1).view(-1, 1, 1, 1)
        assert ((ours_t - lib).abs() <= float32_bound(a.shape[1] + 8, 1.0) * scale).all()
    magnitude = torch.maximum(_magnitude(a, g, weight_factor), _magnitude(evidence.activations, evidence.gradients, weight_factor))
    c, hw = a.shape[1], a.shape[2] * a.shape[3]
    atol = float32_bound(c + hw + 8, 1.0) * magnitude
    # each image's raw check is meaningful: its bound is a small fraction of the terms' scale
    assert (atol.flatten(1).amax(1) <= MEANINGFUL * magnitude.flatten(1).amax(1)).all()
    raw_error = (torch.as_tensor(np.asarray(ours_raw)).double() * raw_scale - torch.as_tensor(theirs.raw).double()).abs()
    assert (raw_error <= atol).all(), f"raw error {raw_error.flatten(1).amax(1)} > bound {atol.flatten(1).amax(1)}"
    normalised_atol = library_atol(ours, evidence.activations, evidence.gradients, weight_factor)
    checked = normalised_atol <= MEANINGFUL
    worst = np.abs(minmax(ours) - theirs.maps).max((1, 2), keepdims=True)
    assert (worst[checked] <= normalised_atol[checked]).all(), f"error {worst.ravel()} > bound {normalised_atol.ravel()}"


def propagated_atol(method, evidence, model: torch.nn.Module) -> torch.Tensor:
    """[B] bounds on |method(A, G) - method(A', G')| at A's resolution, for each image's A' and G' from
    another float32 evaluation (another batch, kernel or process): A within network_relative(model)·max|A|
    (a forward), G within network_relative(model, passes=2)·max|G| (a backward), each plus the method's
    own float32_bound(C + HW + 8) (its sums over channels and positions); propagated through the method
    itself to first order, Σ|∂map/∂A|·|ΔA| + |∂map/∂G|·|ΔG| per coarse position (autograd, so min-max's
    1/r and an SVD's 1/gap are in it), × 2 for the second order and the ReLU kinks. A bilinear
    upsampling and a floor are 1-Lipschitz: the bound holds for the returned maps too."""
    from alignbench.explainers._split import Evidence

    bounds = []
    for i in range(evidence.activations.shape[0]):
        a = evidence.activations[i : i + 1].detach().clone().requires_grad_()
        g = evidence.gradients[i : i + 1].detach().clone().requires_grad_()
        c, hw = a.shape[1], a.shape[2] * a.shape[3]
        own = float32_bound(c + hw + 8, 1.0)
        delta_a = (network_relative(model) + own) * float(a.detach().abs().max())
        delta_g = (network_relative(model, passes=2) + own) * float(g.detach().abs().max())
        coarse = method(Evidence(a, g, evidence.logits[i : i + 1], evidence.targets[i : i + 1])).flatten()
        error = 0.0
        for value in coarse:
            da, dg = torch.autograd.grad(value, (a, g), retain_graph=True, allow_unused=True)
            first = sum(float(d.abs().sum()) * delta for d, delta in ((da, delta_a), (dg, delta_g)) if d is not None)
            error = max(error, first)
        bounds.append(2 * error + float32_relative(8) * float(coarse.detach().abs().max()))
    return torch.tensor(bounds, dtype=torch.float64)

"""The gradient-weighted methods on the shared core: each a few lines from (A, dy_t/dA) to a map.

Every function takes the ``Evidence`` of ``_split.gradient_evidence`` (A and G = dy_t/dA, NCHW) and
returns a map [B, h, w] at A's resolution, on A's device; upsampling is the dispatcher's job. Each
equals pytorch-grad-cam's method of the same name after min-max normalisation (tests/explainers/test_cam_core.py).
The paper's two methods average over channels, as its code does; the others sum, as in their papers
and the library: a positive factor that min-max normalisation removes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from alignbench.explainers._split import Evidence

SPATIAL = (2, 3)


def channel_weights(e: Evidence) -> Tensor:
    """Grad-CAM's w_c = (1/Z) sum_ij dy_t/dA_c,ij (Selvaraju et al. 2017, eq. 1), as [B, C, 1, 1]."""
    return e.gradients.mean(SPATIAL, keepdim=True)


def minmax(maps: Tensor) -> Tensor:
    """Per-image (m - min) / (max - min); a constant map (no positive evidence anywhere) becomes 0."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    span = flat.max(dim=1).values.view(-1, 1, 1) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def gradcam(e: Evidence) -> Tensor:
    """ReLU(mean_c(w_c·A_c)): the ReLU after the channel mean (the paper's GradCAM.py)."""
    return F.relu((channel_weights(e) * e.activations).mean(dim=1))


def threshold_gradcam(e: Evidence, threshold: float = 0.3) -> Tensor:
    """mean_c(ReLU(w_c·A_c)), min-max per image, then floored at ``threshold``.

    Order as in the paper's threshold_GradCAM.py: ReLU per channel *before* the mean (a channel with
    negative evidence cannot cancel a positive one), min-max at A's resolution, floor at 0.3, and
    only then the bilinear upsampling (done by the dispatcher), so the floor is exact after resizing.
    """
    return minmax(F.relu(channel_weights(e) * e.activations).mean(dim=1)).clamp_min(threshold)


def gradcam_plusplus(e: Evidence) -> Tensor:
    """Grad-CAM++ weights (Chattopadhyay et al. 2018, eq. 19, with exp(S) folded as the library does):
    alpha = G^2 / (2 G^2 + sum_ij(A) G^3), w_c = sum_ij alpha·ReLU(G)."""
    g, a = e.gradients, e.activations
    g2 = g.pow(2)
    alpha = g2 / (2 * g2 + a.sum(SPATIAL, keepdim=True) * g2 * g + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    weights = (F.relu(g) * alpha).sum(SPATIAL, keepdim=True)
    return F.relu((weights * a).sum(dim=1))


def xgradcam(e: Evidence) -> Tensor:
    """XGrad-CAM (Fu et al. 2020, eq. 9): w_c = sum_ij (A_c,ij / sum_kl A_c,kl) G_c,ij."""
    a = e.activations
    weights = (e.gradients * a / (a.sum(SPATIAL, keepdim=True) + 1e-7)).sum(SPATIAL, keepdim=True)
    return F.relu((weights * a).sum(dim=1))


def layercam(e: Evidence) -> Tensor:
    """LayerCAM (Jiang et al. 2021, eq. 6): ReLU(sum_c ReLU(G_c,ij)·A_c,ij), a weight per position."""
    return F.relu((F.relu(e.gradients) * e.activations).sum(dim=1))


def hirescam(e: Evidence) -> Tensor:
    """HiResCAM (Draelos & Carin 2020): ReLU(sum_c G_c·A_c), Grad-CAM without the spatial pooling of G."""
    return F.relu((e.gradients * e.activations).sum(dim=1))


def first_component(x: Tensor) -> Tensor:
    """Projection of each position's centred channel vector on the first right singular vector
    (Eigen-CAM, Muhammad & Yeasin 2020), batched on the device; NaN entries count as 0 as in the library.

    A singular vector's sign is arbitrary: the library takes whatever its LAPACK build returns, so
    the same image can come out highlighted or inverted depending on the machine. Here v is oriented
    so that its entries sum to >= 0 — the principal direction points the way the channels add up,
    which is the same as the projection correlating positively with sum_c x_c — and the map is
    deterministic. Up to that sign it is the library's projection.
    """
    b, c, h, w = x.shape
    rows = torch.nan_to_num(x, nan=0.0).flatten(2).transpose(1, 2)  # [B, h*w, C]
    rows = rows - rows.mean(dim=1, keepdim=True)
    # Only the first right singular vector is used, so the thin SVD suffices (the library's full
    # U is (h*w)^2 per image).
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    v = vh[:, 0, :]
    v = torch.where(v.sum(dim=1, keepdim=True) < 0, -v, v)
    return (rows @ v[:, :, None]).reshape(b, h, w)


def eigengradcam(e: Evidence) -> Tensor:
    """Eigen-Grad-CAM: ReLU of the first principal component of G·A."""
    return F.relu(first_component(e.gradients * e.activations))


GRADIENT_METHODS: dict[str, Callable[..., Tensor]] = {
    "gradcam": gradcam,
    "threshold-gradcam": threshold_gradcam,
    "gradcam++": gradcam_plusplus,
    "xgradcam": xgradcam,
    "layercam": layercam,
    "hirescam": hirescam,
    "eigengradcam": eigengradcam,
}

"""The model-free reference explainer: an isotropic Gaussian at the image centre (torch-free).

Human attention on photographs concentrates near the image centre (photographers centre their
subject; Tatler 2007, Judd et al. 2009), so a map that knows nothing about the image but its centre
already correlates with human maps. ``alignbench score`` scores this map once per dataset, protocol
and input size (``alignbench.scoring.centre_bias``), and every comparison shows it, so a reader sees
whether a model's explanations beat the centre prior.

Spearman's ρ depends only on the ranks of the map, and every isotropic Gaussian ranks pixels by their
distance to the centre, so ``sigma_frac`` does not change the Spearman score; it is kept (and
recorded) for value-based metrics. 0.25 of the shorter side keeps the corners at exp(-4) of the peak
(224×224), far from float32 underflow, which would tie the outer pixels and change the ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - numpy is imported on use: a cached score imports neither numpy nor torch
    import numpy as np

CENTRE_BIAS = "centre-bias"  # the reference's model name and explainer method in the store
CENTRE_BIAS_FAMILY = "reference"
CENTRE_BIAS_SIGMA_FRAC = 0.25


def centre_bias_map(height: int, width: int, sigma_frac: float = CENTRE_BIAS_SIGMA_FRAC) -> np.ndarray:
    """float32 [height, width]: exp(-r² / 2σ²), r = distance to the image centre, σ = sigma_frac × min(height, width); peak 1."""
    import numpy as np

    if height < 1 or width < 1 or not sigma_frac > 0:
        raise ValueError(f"centre_bias_map needs a positive size and sigma_frac; got {height}×{width}, {sigma_frac}")
    sigma = sigma_frac * min(height, width)
    # pixel centres at integer coordinates; the image centre is halfway between the middle pixels
    y = np.arange(height, dtype=np.float64) - (height - 1) / 2.0
    x = np.arange(width, dtype=np.float64) - (width - 1) / 2.0
    squared = y[:, None] ** 2 + x[None, :] ** 2
    return np.exp(-squared / (2.0 * sigma * sigma)).astype(np.float32)

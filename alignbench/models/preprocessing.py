"""How a model wants its input: the one value that models, datasets and explainers agree on (torch-free).

Models fill it from timm's pretrained config (or the registry's override); dataset protocols read it
to turn an image into the model's input tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PaperKind = Literal["convnext", "metaformer", "timm"]


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int]  # (H, W) of the model input
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"  # resize interpolation of timm's eval transform for this model
    crop_pct: float = 0.875  # centre-crop fraction of timm's eval transform
    # The published code's per-model transform, used by the `paper` protocol: convnext = resize 256
    # bicubic + centre crop 224; metaformer = resize 224 bicubic + centre crop 224; timm = timm's
    # eval transform for the model (resize input/crop_pct, centre crop).
    paper_kind: PaperKind = "timm"

"""Where a checkpoint's weights were trained, when that changes how the model must be fed (torch-free).

A checkpoint from another training code base can hold weights for a timm architecture that were
trained with another input normalisation than timm's pretrained tag of that architecture (timm's
``vit_base_patch16_224`` tag normalises with mean = std = 0.5; MoCo v3 trained with ImageNet's
mean/std). The origin is detected from the checkpoint (``_checkpoint.detect_origin``) or declared with
``ModelRequest.tag``, recorded in ``model.origin``, and decides the preprocessing here.
"""

from __future__ import annotations

from dataclasses import dataclass

# torchvision's ImageNet statistics (timm's IMAGENET_DEFAULT_MEAN / _STD)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CheckpointOrigin:
    """A training code base and the eval transform its checkpoints expect (input size: the model's)."""

    name: str  # what model.origin records
    source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float


MOCO_V3 = "moco-v3"

ORIGINS = {
    # facebookresearch/moco-v3 main_lincls.py evaluates with Resize(256) (torchvision: bilinear),
    # CenterCrop(224) and Normalize(ImageNet mean/std): crop_pct = 224/256.
    MOCO_V3: CheckpointOrigin(
        MOCO_V3,
        "facebookresearch/moco-v3 (Chen, Xie & He 2021)",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        crop_pct=0.875,
    ),
}

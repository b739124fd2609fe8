"""From a decoded sample to the model input, the reference map and the boxes (imports torch).

ClickMe preprocessing, as Harmonization's ``parse_clickme_prototype`` does it in TensorFlow
(harmonization/common/clickme_dataset.py, blur.py):

- image: uint8 256×256×3 → float → ``tf.image.resize(..., (224, 224), "bilinear")``;
- heatmap: uint8 256×256 → float → bilinear 256→64 → Gaussian blur (below) → bilinear 64→224.

TF2's bilinear resize (antialias=False) samples at half-pixel centres and clamps at the border, which
is ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``. The blur is TF's
``conv2d(..., padding="SAME")`` with a 10×10 kernel: SAME pads an even kernel 4 before and 5 after.

Protocols (SPEC "Datasets"):

- ``aligned``: the 256 image is resized straight to the model input and normalised; the reference is
  made at the model input size. For a 224 model this is exactly the ClickMe preprocessing, and image
  and reference share one geometry.
- ``paper``: the published DCLS-GradCAM-Eval code (utils.evaluate_clickme) takes the 224 float image,
  truncates it to uint8 (``.astype(np.uint8)``), makes a PIL image and applies the model's torchvision
  transform — which resizes and centre-crops the image — while the 224 heatmap is left uncropped.
  Reproduced here with the same PIL operations torchvision applies to a PIL image. When the model
  input is not 224 the 224 heatmap is resized (bilinear) to it, so maps can be compared at all.

Folder images and heatmaps are resized to the model input with antialiased bilinear, no crop; so are
the images and fixation densities of eye-tracking datasets.
ClickMe JPEGs are decoded as ``tf.io.decode_jpeg`` decodes them (libjpeg-turbo's fast integer IDCT,
through simplejpeg: see ``_clickme.decode_jpeg``); folder and ImageNet images with PIL. Given the
same decoded pixels, this module's image and reference maps equal TensorFlow 2.21's
``parse_clickme_prototype`` steps to float rounding (max |diff| 4.6e-5 on the 0..255 image, 5e-7
relative on the heatmap, 64 real images).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from alignbench.datasets._base import ClickMeSample, FolderSample
from alignbench.datasets._fixations import FixationSample
from alignbench.models.preprocessing import Preprocessing

# Harmonization blur.py: BLUR_KERNEL_SIZE = 10, BLUR_SIGMA = 10; heatmaps are blurred at 64×64 and
# images and heatmaps end at 224×224 (clickme_dataset.py).
BLUR_KERNEL_SIZE = 10
BLUR_SIGMA = 10
CLICKME_BLUR_SIDE = 64
CLICKME_MODEL_SIDE = 224
# The paper's transform per model family (DCLS-GradCAM-Eval get_model.py): ConvNeXt resizes to
# int(224 / (224/256)) = 256 bicubic and centre-crops 224; MetaFormers resize to 224 bicubic and
# centre-crop 224; every other model uses timm's eval transform (resize input/crop_pct, crop input).
_PAPER_CROP_PCT = {"convnext": 224 / 256, "metaformer": 1.0}
_PAPER_INTERPOLATION = {"convnext": "bicubic", "metaformer": "bicubic"}


def clickme_blur_kernel() -> Tensor:
    """The ClickMe Gaussian kernel, float32 [10, 10]: x from -5 to 4 along columns, y from 4 to -5
    along rows, exp(-(x² + y²) / (2σ²)) normalised to sum 1 (computed in float64, as TF does for
    int32 / int division, then cast)."""
    half = (BLUR_KERNEL_SIZE - 1) // 2
    xs = torch.arange(-half - 1, half + 1, dtype=torch.float64)  # -5 … 4 (Python's -(9)//2 = -5)
    ys = torch.arange(half, -half - 2, -1, dtype=torch.float64)  # 4 … -5
    kernel = torch.exp(-(xs[None, :] ** 2 + ys[:, None] ** 2) / (2 * BLUR_SIGMA**2)) / (2 * math.pi * BLUR_SIGMA**2)
    return (kernel / kernel.sum()).to(torch.float32)


_KERNEL = clickme_blur_kernel()


def clickme_blur(heatmaps: Tensor) -> Tensor:
    """TF ``conv2d(heatmap, kernel, strides=1, padding="SAME")`` on [B, 1, H, W] float32 maps."""
    before = (BLUR_KERNEL_SIZE - 1) // 2  # SAME: total padding 9 → 4 before, 5 after
    after = BLUR_KERNEL_SIZE - 1 - before
    padded = F.pad(heatmaps, (before, after, before, after))
    return F.conv2d(padded, _KERNEL.to(heatmaps.device)[None, None])  # cross-correlation, like TF


def resize_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """TF2 ``tf.image.resize(method="bilinear")``: half-pixel centres, no antialias. [B, C, H, W]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


def clickme_reference(heatmap: Tensor, size: tuple[int, int] = (CLICKME_MODEL_SIDE, CLICKME_MODEL_SIDE)) -> Tensor:
    """ClickMe heatmap preprocessing: [H, W] (256×256) float → [size] float32."""
    x = heatmap.to(torch.float32)[None, None]
    x = resize_bilinear(x, (CLICKME_BLUR_SIDE, CLICKME_BLUR_SIDE))
    x = clickme_blur(x)
    return resize_bilinear(x, size)[0, 0]


def normalise(image_0_255: Tensor, preprocessing: Preprocessing) -> Tensor:
    """[3, H, W] in 0..255 → (x / 255 − mean) / std, float32."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(preprocessing.std, dtype=torch.float32)[:, None, None]
    return (image_0_255 / 255.0 - mean) / std


def _pil_filter(name: str) -> int:
    from PIL import Image

    filters = {
        "nearest": Image.NEAREST,
        "bilinear": Image.BILINEAR,
        "bicubic": Image.BICUBIC,
        "lanczos": Image.LANCZOS,
        "box": Image.BOX,
        "hamming": Image.HAMMING,
    }
    return filters.get(name, Image.BICUBIC)  # timm's "random" etc.: its eval default, bicubic


def paper_geometry(preprocessing: Preprocessing) -> tuple[tuple[int, int], tuple[int, int], str]:
    """(resize (h, w), crop top-left (top, left), interpolation) of the paper's transform of a
    224×224 image for this model (torchvision Resize + CenterCrop semantics)."""
    height, width = preprocessing.input_size
    crop_pct = _PAPER_CROP_PCT.get(preprocessing.paper_kind, preprocessing.crop_pct)
    interpolation = _PAPER_INTERPOLATION.get(preprocessing.paper_kind, preprocessing.interpolation)
    if preprocessing.paper_kind == "convnext":  # get_model.py: size = int(input_size / crop_pct)
        resized = (int(height / crop_pct), int(width / crop_pct))
    else:  # timm transforms_imagenet_eval: math.floor(img_size / crop_pct)
        resized = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    # torchvision center_crop: int(round((image - crop) / 2))
    top, left = int(round((resized[0] - height) / 2.0)), int(round((resized[1] - width) / 2.0))
    return resized, (top, left), interpolation


def paper_image(image_224: Tensor, preprocessing: Preprocessing) -> Tensor:
    """The published pipeline's model input from the float 224×224×3 ClickMe image (HWC, 0..255)."""
    from PIL import Image

    (resized_h, resized_w), (top, left), interpolation = paper_geometry(preprocessing)
    height, width = preprocessing.input_size
    pil = Image.fromarray(image_224.numpy().astype(np.uint8))  # truncation, as the published code does
    if pil.size != (resized_w, resized_h):
        pil = pil.resize((resized_w, resized_h), _pil_filter(interpolation))
    if top < 0 or left < 0:  # torchvision pads a crop larger than the image with zeros
        canvas = Image.new("RGB", (max(width, resized_w), max(height, resized_h)))
        canvas.paste(pil, (max(0, -left), max(0, -top)))
        pil, top, left = canvas, max(0, top), max(0, left)
    cropped = pil.crop((left, top, left + width, top + height))
    array = torch.from_numpy(np.array(cropped, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32)
    return normalise(array, preprocessing)


def _clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    limits = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    clipped = torch.minimum(boxes.clamp(min=0), limits)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped[keep]


def clickme_item(sample: ClickMeSample, preprocessing: Preprocessing, protocol: str) -> tuple[Tensor, Tensor, Tensor]:
    """(image [3, H, W] normalised, reference [H, W], boxes [K, 4]) at the model input size."""
    height, width = preprocessing.input_size
    image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1).to(torch.float32)[None]
    heatmap = torch.from_numpy(np.ascontiguousarray(sample.heatmap))
    boxes_256 = torch.from_numpy(np.ascontiguousarray(sample.boxes, dtype=np.float32)).reshape(-1, 4)
    side = float(sample.image.shape[0])
    if protocol == "aligned":
        model_input = normalise(resize_bilinear(image, (height, width))[0], preprocessing)
        reference = clickme_reference(heatmap, (height, width))
        boxes = boxes_256 * torch.tensor([width / side, height / side] * 2)
    else:  # paper
        image_224 = resize_bilinear(image, (CLICKME_MODEL_SIDE, CLICKME_MODEL_SIDE))[0].permute(1, 2, 0)
        model_input = paper_image(image_224, preprocessing)
        reference = clickme_reference(heatmap)
        if reference.shape != (height, width):
            reference = resize_bilinear(reference[None, None], (height, width))[0, 0]
        (resized_h, resized_w), (top, left), _ = paper_geometry(preprocessing)
        scale = torch.tensor([resized_w / side, resized_h / side] * 2)
        boxes = boxes_256 * scale - torch.tensor([left, top, left, top], dtype=torch.float32)
    return model_input.contiguous(), reference.contiguous(), _clip_boxes(boxes.to(torch.float32), height, width)


def folder_item(sample: FolderSample, preprocessing: Preprocessing) -> tuple[Tensor, Tensor, Tensor]:
    """(image [3, H, W] normalised, reference [H, W], no boxes); the reference is NaN where the
    folder has no heatmaps, so a batch keeps its shape and a metric reading it could only give NaN."""
    height, width = preprocessing.input_size
    image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1).to(torch.float32)[None]
    if sample.heatmap is None:
        heatmap = torch.full((1, 1, height, width), float("nan"), dtype=torch.float32)
    else:
        heatmap = torch.from_numpy(np.ascontiguousarray(sample.heatmap, dtype=np.float32))[None, None]
    if tuple(image.shape[-2:]) != (height, width):
        image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        if sample.heatmap is not None:
            heatmap = F.interpolate(heatmap, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    model_input = normalise(image[0].clamp(0, 255), preprocessing)
    return model_input.contiguous(), heatmap[0, 0].contiguous(), torch.zeros((0, 4), dtype=torch.float32)


def fixation_item(sample: FixationSample, preprocessing: Preprocessing) -> tuple[Tensor, Tensor, Tensor]:
    """(image [3, H, W] normalised, reference [H, W], no boxes): the image as a folder image, the
    reference the fixation density resized to the model input like a folder heatmap (antialiased
    bilinear; all NaN for an image without fixations)."""
    return folder_item(FolderSample(image=sample.image, heatmap=sample.density, label=sample.label), preprocessing)


def reference_recipe(geometry: str, preprocessing: Preprocessing, protocol: str) -> str:
    """What the reference map of an image depends on besides the image (keys the rank cache)."""
    height, width = preprocessing.input_size
    if geometry == "folder":
        return f"folder antialiased-bilinear {height}x{width}"
    if geometry == "fixations":  # the sigma is in the dataset's fingerprint
        return f"fixation density antialiased-bilinear {height}x{width}"
    if protocol == "paper" and (height, width) != (CLICKME_MODEL_SIDE, CLICKME_MODEL_SIDE):
        return f"clickme {CLICKME_MODEL_SIDE}x{CLICKME_MODEL_SIDE} then bilinear {height}x{width}"
    return f"clickme {height}x{width}"  # aligned at any size; paper at 224 is the same map

"""Faithfulness metrics: does the region a heatmap highlights drive the model's prediction?

Pure, batched functions of (model, images [B, 3, H, W], maps [B, H, W], targets [B]); every value is
per image, NaN where undefined (constant or non-finite map, non-finite image). The model sees the
images exactly as given, i.e. already normalised with the model's mean/std, and its score for the
target is the softmax probability (computed in float64).

- ``deletion_auc`` / ``insertion_auc`` (RISE, Petsiuk et al., BMVC 2018, ``evaluation.py``): pixels
  are replaced in order of decreasing saliency — by the baseline (deletion) or by the image, starting
  from the baseline (insertion) — in ``steps`` equal steps; the target's probability at each of the
  ``steps + 1`` images, integrated by the trapezoid rule over the fraction of pixels changed, is the
  AUC in [0, 1]. Deletion: lower is better; insertion: higher is better. As in RISE, the deletion
  baseline is zeros and the insertion baseline is a Gaussian blur of the image (11 x 11, sigma 5).
  All ``B * (steps + 1)`` images go through the model in batches of ``batch_size`` (default: 8 on a
  CPU, 64 on a GPU), not one pass per step.
- ``average_drop`` and ``average_increase`` (Grad-CAM++, Chattopadhyay et al., WACV 2018, sec. 5.1)
  and ``average_gain`` (Opti-CAM, Zhang et al., CVIU 2024): with y = p(target | image) and
  o = p(target | image masked by the map), per image
  drop = max(0, y - o) / y * 100, increase = 100 * [o > y], gain = max(0, o - y) / (1 - y) * 100.
  The dataset means are the papers' "Average Drop %", "% Increase in Confidence" and "Average Gain %".

Masking. "Image masked by the map" is ``baseline + m * (image - baseline)`` with m the map min-max
normalised to [0, 1]. With the default ``baseline="zeros"`` that is ``image * m`` on the normalised
tensor, as pytorch-grad-cam's ``CamMultImageConfidenceChange`` does: masked-out pixels blend towards
the dataset's mean colour (normalised zero), not black. Pass ``baseline=(0 - mean) / std`` as a
[3, 1, 1] tensor for the black of the papers' unnormalised ``I * L``. Baselines: ``"zeros"``,
``"blur"``, a number (in normalised units), or a tensor broadcastable to [B, 3, H, W].

Ordering ties (RISE uses an unstable argsort) are broken by raster order: among equally salient
pixels the one with the lower row-major index goes first, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from alignbench.errors import MetricError
from alignbench.metrics.localisation import check_maps, map_defined, minmax_normalise

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_STEPS",
    "METRIC_FUNCTIONS",
    "average_drop",
    "average_gain",
    "average_increase",
    "blur",
    "causal_curve",
    "confidence_change",
    "deletion_auc",
    "insertion_auc",
]

Baseline = Union[Literal["zeros", "blur"], float, Tensor]

# RISE replaces 224 pixels per step on 224 x 224 images (evaluation.py: step=224, HW=224*224),
# i.e. 224 steps; the step count here is fixed per image so that it reads the same at any size.
DEFAULT_STEPS = 224
# Perturbed images per forward pass when none is given: large on a GPU (all 225 steps of an image in 4
# passes), small on a CPU, where efficientnet_lite0's depthwise convs turn memory-bound once a batch's
# activations outgrow the cache. Measured on a 2-core EPYC (benchmarks/metrics.py): with 2 threads
# batch 8 ran ~22 images/s against ~9 at batch 1 and ~7-8 at 32-64; with 1 thread batches 1-4 were best.
DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 64}
# RISE's insertion substrate: gkern(klen=11, nsig=5), a Gaussian blur applied per channel.
BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 5.0


# ---------------------------------------------------------------------------------------------
# inputs


def _check_inputs(model: nn.Module, images: Tensor, maps: Tensor, targets: Tensor) -> None:
    if not isinstance(model, nn.Module):
        raise MetricError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise MetricError("the model is in training mode; call model.eval() before computing faithfulness metrics")
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise MetricError(f"images must be a float tensor [B, C, H, W], got {shape}")
    check_maps(maps)
    if maps.shape[0] != images.shape[0] or maps.shape[1:] != images.shape[2:]:
        raise MetricError(
            f"maps {list(maps.shape)} must match images {list(images.shape)} in batch and size; upsample the maps to the input size first"
        )
    if not isinstance(targets, Tensor) or targets.shape != (images.shape[0],) or targets.is_floating_point():
        shape = list(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise MetricError(f"targets must be an integer tensor [B={images.shape[0]}], got {shape}")
    if targets.numel() and int(targets.min()) < 0:
        raise MetricError(f"targets must be class indices >= 0, got {int(targets.min())}")
    if maps.device != images.device:
        raise MetricError(f"maps are on {maps.device} but images on {images.device}; put both on the model's device")


def _finite_images(images: Tensor) -> Tensor:
    return torch.isfinite(images).flatten(1).all(dim=1)


@lru_cache(maxsize=8)
def _blur_kernel(size: int, sigma: float) -> Tensor:
    # RISE builds its kernel as scipy.ndimage.gaussian_filter of a centred delta (mode="reflect",
    # so the tails beyond the 11 x 11 window fold back in and it sums to 1); reproduce it exactly.
    import numpy as np
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    return torch.from_numpy(gaussian_filter(delta, sigma)).float()


def blur(images: Tensor, *, size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """RISE's insertion substrate: each channel convolved with its Gaussian kernel, zero padding."""
    kernel = _blur_kernel(size, float(sigma)).to(images.device, images.dtype)
    channels = images.shape[1]
    weight = kernel.expand(channels, 1, size, size)
    return nn.functional.conv2d(images, weight, padding=size // 2, groups=channels)


def _baseline(images: Tensor, baseline: Baseline) -> Tensor:
    if isinstance(baseline, str):
        if baseline == "zeros":
            return torch.zeros_like(images)
        if baseline == "blur":
            return blur(images)
        raise MetricError(f"unknown baseline {baseline!r}; use 'zeros', 'blur', a number or a tensor")
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(images, float(baseline))
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(images.device, images.dtype), images.shape)
        except RuntimeError:
            raise MetricError(f"baseline of shape {list(baseline.shape)} does not broadcast to images {list(images.shape)}") from None
    raise MetricError(f"baseline must be 'zeros', 'blur', a number or a tensor, got {type(baseline).__name__}")


def _target_probabilities(model: nn.Module, images: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    """p(target | image) in float64 for every image, in forward passes of at most ``batch_size``."""
    out = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start : start + batch_size])
            out.append(_probability_of(logits, targets[start : start + batch_size]))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64, device=images.device)


def _probability_of(logits: Tensor, targets: Tensor) -> Tensor:
    if logits.dim() != 2:
        raise MetricError(f"the model must return logits [B, num_classes], got {list(logits.shape)}")
    if targets.numel() and int(targets.max()) >= logits.shape[1]:
        raise MetricError(f"target {int(targets.max())} is outside the model's {logits.shape[1]} classes")
    return logits.double().softmax(dim=1).gather(1, targets.to(logits.device)[:, None]).squeeze(1)


def _check_batch_size(batch_size: int | None, device: torch.device) -> int:
    if batch_size is None:
        return DEFAULT_BATCH_SIZE.get(device.type, DEFAULT_BATCH_SIZE["cuda"])
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MetricError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


# ---------------------------------------------------------------------------------------------
# deletion / insertion


def causal_curve(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    mode: Literal["deletion", "insertion"],
    steps: int = DEFAULT_STEPS,
    baseline: Baseline | None = None,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """RISE's deletion or insertion curve: (fractions [steps + 1], probabilities [B, steps + 1]), float64.

    At step i the ``floor(i * H * W / steps)`` most salient pixels (all channels) are changed, and
    fractions[i] is that count over H * W. ``baseline`` None means RISE's: zeros for deletion, blur
    for insertion. Rows of images whose map is undefined are NaN and cost no forward pass.
    """
    _check_inputs(model, images, maps, targets)
    if mode not in ("deletion", "insertion"):
        raise MetricError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    batch, _, height, width = images.shape
    pixels = height * width
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= pixels:
        raise MetricError(f"steps must be an integer in [1, H*W={pixels}], got {steps!r}")
    batch_size = _check_batch_size(batch_size, images.device)
    if baseline is None:
        baseline = "zeros" if mode == "deletion" else "blur"

    device = images.device
    changed = torch.arange(steps + 1, device=device) * pixels // steps  # pixels changed at each step
    fractions = changed.double() / pixels
    probabilities = torch.full((batch, steps + 1), float("nan"), dtype=torch.float64, device=device)
    defined = map_defined(maps) & _finite_images(images)
    todo = defined.nonzero().squeeze(1)
    if todo.numel() == 0:
        return fractions, probabilities

    with torch.inference_mode():
        image = images[todo]
        substrate = _baseline(image, baseline)
        start, finish = (image, substrate) if mode == "deletion" else (substrate, image)
        # rank[b, p]: position of pixel p in b's order of decreasing saliency (stable: raster order on ties)
        order = maps[todo].reshape(len(todo), pixels).argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(pixels, device=device).expand_as(order))
        target = targets.to(device)[todo]
        # every (image, step) pair is one input; pairs go through the model batch_size at a time, so
        # all steps of an image share few forward passes instead of one pass per step
        n_pairs = len(todo) * (steps + 1)
        values = torch.empty(n_pairs, dtype=torch.float64, device=device)
        for first in range(0, n_pairs, batch_size):
            pair = torch.arange(first, min(first + batch_size, n_pairs), device=device)
            b, i = pair // (steps + 1), pair % (steps + 1)
            replaced = (rank[b] < changed[i][:, None]).view(-1, 1, height, width)
            perturbed = torch.where(replaced, finish[b], start[b])
            values[first : first + len(pair)] = _probability_of(model(perturbed), target[b])
        probabilities[todo] = values.view(len(todo), steps + 1)
    return fractions, probabilities


def _auc(fractions: Tensor, probabilities: Tensor) -> Tensor:
    # trapezoid rule over the fraction of pixels changed (0 .. 1): RISE's auc() for equal steps
    return torch.trapezoid(probabilities, fractions, dim=1).float()


def deletion_auc(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    baseline: Baseline = "zeros",
    batch_size: int | None = None,
) -> Tensor:
    """RISE deletion AUC per image, in [0, 1], lower is better; [B] float32 (NaN: undefined map)."""
    return _auc(*causal_curve(model, images, maps, targets, mode="deletion", steps=steps, baseline=baseline, batch_size=batch_size))


def insertion_auc(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    baseline: Baseline = "blur",
    batch_size: int | None = None,
) -> Tensor:
    """RISE insertion AUC per image, in [0, 1], higher is better; [B] float32 (NaN: undefined map)."""
    return _auc(*causal_curve(model, images, maps, targets, mode="insertion", steps=steps, baseline=baseline, batch_size=batch_size))


# ---------------------------------------------------------------------------------------------
# average drop / increase / gain


def confidence_change(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    baseline: Baseline = "zeros",
    logits: Tensor | None = None,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(y, o) [B] float64: p(target) on the image and on the image masked by the map (module docstring).

    ``logits``: the model's logits on ``images`` when the caller has them (the explainer's forward
    pass), which saves recomputing y. Both are NaN where the map or image is undefined.
    """
    _check_inputs(model, images, maps, targets)
    batch_size = _check_batch_size(batch_size, images.device)
    normalised, defined = minmax_normalise(maps)
    defined &= _finite_images(images)
    nan = torch.full((images.shape[0],), float("nan"), dtype=torch.float64, device=images.device)
    y, o = nan.clone(), nan.clone()
    todo = defined.nonzero().squeeze(1)
    if todo.numel() == 0:
        return y, o
    with torch.inference_mode():
        image, target = images[todo], targets.to(images.device)[todo]
        base = _baseline(image, baseline)
        weight = normalised[todo].to(image.dtype)[:, None]
        masked = base + weight * (image - base)
        o[todo] = _target_probabilities(model, masked, target, batch_size)
        if logits is not None:
            if logits.dim() != 2 or logits.shape[0] != images.shape[0]:
                raise MetricError(f"logits must be [B={images.shape[0]}, num_classes], got {list(logits.shape)}")
            y[todo] = _probability_of(logits.detach()[todo.to(logits.device)], target).to(y.device)
        else:
            y[todo] = _target_probabilities(model, image, target, batch_size)
    return y, o


def _drop(y: Tensor, o: Tensor) -> Tensor:
    # y == 0 (only by float64 underflow) leaves 0 / 0 = NaN: undefined, counted as skipped
    return ((y - o).clamp(min=0) / y * 100).float()


def _increase(y: Tensor, o: Tensor) -> Tensor:
    return torch.where(torch.isnan(y) | torch.isnan(o), y, (o > y).double() * 100).float()


def _gain(y: Tensor, o: Tensor) -> Tensor:
    # A model already certain of the target (1 - y == 0 in float64) has nothing to gain: 0, not 0 / 0
    # (the limit of Opti-CAM's ReLU(o - y) / (1 - y + eps)).
    room = 1 - y
    gain = (o - y).clamp(min=0) / torch.where(room > 0, room, torch.ones_like(room)) * 100
    return torch.where(room > 0, gain, torch.where(torch.isnan(y), y, torch.zeros_like(y))).float()


def average_drop(model: nn.Module, images: Tensor, maps: Tensor, targets: Tensor, **options: Any) -> Tensor:
    """Per-image drop max(0, y - o) / y * 100 (Grad-CAM++), lower is better; [B] float32."""
    return _drop(*confidence_change(model, images, maps, targets, **options))


def average_increase(model: nn.Module, images: Tensor, maps: Tensor, targets: Tensor, **options: Any) -> Tensor:
    """Per-image increase in confidence 100 * [o > y] (Grad-CAM++), higher is better; [B] float32."""
    return _increase(*confidence_change(model, images, maps, targets, **options))


def average_gain(model: nn.Module, images: Tensor, maps: Tensor, targets: Tensor, **options: Any) -> Tensor:
    """Per-image gain max(0, o - y) / (1 - y) * 100 (Opti-CAM), higher is better; [B] float32."""
    return _gain(*confidence_change(model, images, maps, targets, **options))


# ---------------------------------------------------------------------------------------------
# scorer adapters: compute(maps, batch, *, model, explanation) -> Tensor[B]

# average-drop, -increase and -gain share one masked forward pass: the last batch's (y, o) is kept,
# keyed by the very tensors and model it came from (held here, so their ids cannot be reused).
_last_change: list[tuple[Any, ...]] = []


def _shared_change(maps: Tensor, batch: Mapping[str, Any], model: nn.Module, explanation: Any) -> tuple[Tensor, Tensor]:
    images = batch["image"]
    if _last_change:
        k_maps, k_images, k_model, k_explanation, result = _last_change[0]
        if k_maps is maps and k_images is images and k_model is model and k_explanation is explanation:
            return result
    result = confidence_change(model, images.to(maps.device), maps, explanation.targets, logits=getattr(explanation, "logits", None))
    _last_change[:] = [(maps, images, model, explanation, result)]
    return result


def _require_model(model: Any, metric: str) -> nn.Module:
    if model is None:
        raise MetricError(f"metric {metric!r} needs the model (it runs forward passes on perturbed images)")
    return model


def _steps(maps: Tensor, steps: int | None) -> int:
    # images smaller than 15 x 15 have fewer pixels than RISE's step count: one pixel per step then
    return min(DEFAULT_STEPS if steps is None else steps, maps.shape[-2] * maps.shape[-1])


def _deletion(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None, steps: int | None = None) -> Tensor:
    model = _require_model(model, "deletion")
    return deletion_auc(model, batch["image"].to(maps.device), maps, explanation.targets, steps=_steps(maps, steps))


def _insertion(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None, steps: int | None = None) -> Tensor:
    model = _require_model(model, "insertion")
    return insertion_auc(model, batch["image"].to(maps.device), maps, explanation.targets, steps=_steps(maps, steps))


def _average_drop(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None) -> Tensor:
    return _drop(*_shared_change(maps, batch, _require_model(model, "average-drop"), explanation))


def _average_increase(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None) -> Tensor:
    return _increase(*_shared_change(maps, batch, _require_model(model, "average-increase"), explanation))


def _average_gain(maps: Tensor, batch: Mapping[str, Any], *, model: Any = None, explanation: Any = None) -> Tensor:
    return _gain(*_shared_change(maps, batch, _require_model(model, "average-gain"), explanation))


METRIC_FUNCTIONS = {
    "deletion": _deletion,
    "insertion": _insertion,
    "average-drop": _average_drop,
    "average-increase": _average_increase,
    "average-gain": _average_gain,
}

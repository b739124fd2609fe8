"""``explain`` / ``explain_batch``: one entry point over the four kinds of method (core, library, attention, attribution)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignbench._utils.precision import check_precision
from alignbench.errors import ExplainerError
from alignbench.explainers._attention import attention_maps, attention_modules, block_index, ca_attention_maps, ca_stream_model
from alignbench.explainers._captum import (  # imports captum on use
    attribution_maps,
    check_guided_backprop,
    check_input_gradient,
    check_occlusion,
    model_input_size,
)
from alignbench.explainers._gradient import GRADIENT_METHODS, minmax
from alignbench.explainers._library import library_maps  # imports pytorch-grad-cam (cv2, sklearn, ttach) on use
from alignbench.explainers._methods import DEFAULT_METHOD, METHODS, MethodSpec, explainer_setting, resolve_method
from alignbench.explainers._split import StreamSplit, Targets, as_batch, eval_mode, gradient_evidence, model_name, split_model
from alignbench.explainers._tokens import TOKEN_REFUSED, block_of, check_grid, is_token_transformer, token_evidence


@dataclass(frozen=True)
class Explanation:
    """Maps and the prediction they explain, from one forward pass.

    maps [B, H, W] float32 at the images' size, logits [B, num_classes], targets [B] (long): the class
    each map explains (the given one, else the top-1 prediction). All on the model's device.
    """

    maps: Tensor
    logits: Tensor
    targets: Tensor
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @property
    def confidences(self) -> Tensor:
        """Softmax probability of the predicted class."""
        return self.logits.float().softmax(dim=1).amax(dim=1)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of [B, h, w] maps with half-pixel centres (align_corners=False) and no
    antialiasing: the convention of the paper's torchvision Resize on upsampling, of cv2 in
    pytorch-grad-cam, and of the ClickMe preprocessing, so explanations and human maps share a grid."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False, antialias=False)[:, 0]


def check_applicable(model: nn.Module, method: str, **params: Any) -> None:
    """Raise ExplainerError (one line: what is wrong, what to use) if ``method`` with ``params``
    cannot explain ``model`` (e.g. rollout on a CNN, a layer the model does not have, an input
    gradient the model does not have). Called once before a run; an attribution that needs the
    input gradient costs one probe forward here."""
    spec = resolve_method(method)
    _check(model, spec, params)
    size = model_input_size(model)
    if spec.name == "occlusion" and size is not None:  # explain_batch checks against the images themselves
        check_occlusion(*size, {**METHODS["occlusion"].defaults, **params}, what=f"{model_name(model)}'s input")
    if spec.needs == "input-gradient":
        check_input_gradient(model, spec.name)


def _check(model: nn.Module, spec: MethodSpec, params: dict[str, Any]) -> None:
    """What ``check_applicable`` checks but the model's input size and the probe: cheap, run by every ``explain_batch``."""
    if spec.kind == "attribution":
        if spec.name == "guided-backprop":
            check_guided_backprop(model)
        return
    if spec.needs == "attention":
        attns = attention_modules(model, spec.name)
        if "layer" in params:
            block_index(attns, int(params["layer"]), model)
        return
    if spec.needs == "ca-stream":
        ca_stream_model(model, spec.name)
        return
    layer = int(params.get("layer", -1))
    if is_token_transformer(model):
        if spec.name in TOKEN_REFUSED:
            raise ExplainerError(
                f"{spec.name} cannot explain {model_name(model)} (a token transformer): {TOKEN_REFUSED[spec.name]}; use gradcam"
            )
        block_of(model, layer, spec.name)
        check_grid(model, spec.name)
        return
    split = split_model(model)
    if layer != -1:
        raise ExplainerError(
            f"--layer picks a block of a token transformer (ViT/DeiT); {model_name(model)} is explained at its "
            "forward_features output: leave --layer out"
        )
    if spec.name == "ablationcam" and isinstance(split, StreamSplit):
        # AblationCAM re-runs the head on cached activations, one image's copies per batch; a stream
        # model's head also needs that image's token, which the library has no way to hand over.
        raise ExplainerError(f"ablationcam cannot explain {model_name(model)} (a CA-Stream model); use scorecam, gradcam or ca-attention")


def explain_batch(
    model: nn.Module, images: Tensor, targets: Targets = None, method: str = DEFAULT_METHOD, *, precision: str = "fp32", **params: Any
) -> Explanation:
    """Explain a batch: maps [B, H, W] plus the logits and targets of the same forward pass.

    ``images``: normalised [B, 3, H, W] (or one [3, H, W]); ``targets``: None (top-1), one class for
    all, or one per image. The model is put in eval mode for the call and left as it was.
    ``precision``: the forward passes' precision (``alignbench._utils.precision``); maps are float32 always.
    """
    name, full = explainer_setting(method, **params)
    spec = METHODS[name]
    _check(model, spec, full)
    if check_precision(precision) != "fp32" and spec.kind == "library":
        # pytorch-grad-cam runs its own forward and backward: autocast could not be kept to the forward
        raise ExplainerError(
            f"--precision {precision} applies to the torch-native explainers ({', '.join(n for n, s in METHODS.items() if s.kind != 'library')}); "
            f"{name} comes from pytorch-grad-cam: use --precision fp32"
        )
    x = as_batch(images, model)
    size = (x.shape[-2], x.shape[-1])
    # Gradients are needed even when the caller runs under torch.inference_mode(); an image batch
    # made there is an inference tensor, which autograd may read but not differentiate: copy it.
    with torch.inference_mode(False), eval_mode(model):
        if x.is_inference():
            x = x.clone()
        if spec.kind == "core":
            layer = int(full.get("layer", -1))
            if is_token_transformer(model):
                evidence = token_evidence(model, x, targets, layer=layer, precision=precision)
            else:
                evidence = gradient_evidence(model, x, targets, precision=precision)
            method_params = {key: value for key, value in full.items() if key != "layer"}
            maps = upsample(GRADIENT_METHODS[name](evidence, **method_params), size)
            logits, t = evidence.logits, evidence.targets
        elif spec.kind == "attribution":
            maps, logits, t = attribution_maps(model, x, targets, spec, full, precision=precision)
        elif spec.kind == "library":
            maps, logits, t = library_maps(model, x, targets, spec, full)
        elif spec.needs == "ca-stream":
            low, logits, t = ca_attention_maps(model, x, targets)
            # upsampled first, then min-max: exactly [0, 1] at the input's size (bilinear
            # upsampling need not reach the low-resolution extremes)
            maps = minmax(upsample(low, size))
        else:
            low, logits, t = attention_maps(model, x, targets, name, full, precision=precision)
            maps = upsample(low, size)
    return Explanation(maps=maps.float(), logits=logits, targets=t, method=name, params=full)


def explain(model: nn.Module, images: Tensor, targets: Targets = None, method: str = DEFAULT_METHOD, **params: Any) -> Tensor:
    """Heatmaps [B, H, W] (float32, the images' size, on the model's device) for normalised images [B, 3, H, W].

    ``targets``: None (explain the top-1 class), one class index, or one per image; ``method``: a
    name or alias from ``METHODS``; ``params``: the method's parameters (e.g. ``threshold=0.3``).
    """
    return explain_batch(model, images, targets, method, **params).maps

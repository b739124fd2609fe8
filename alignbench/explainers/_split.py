"""The shared core of the gradient-weighted explainers: the timm model split at the target layer A.

Grad-CAM and its relatives need dy_t/dA and nothing else, yet the usual implementations (the paper's
``grad_cam``, pytorch-grad-cam's ``BaseCAM``) run the whole model under autograd and back-propagate
the logit through every weight, and the library then moves A and dA to numpy on the CPU. Here the
model is cut at A:

    A  = forward_features(x)            without autograd: no graph, no saved activations
    A' = A.detach().requires_grad_()    the only leaf that needs a gradient
    y  = forward_head(A')               global pool + (norm) + classifier: tiny
    dy_t/dA = autograd.grad(y_t, A')    back through the head only

so the cost is one inference forward plus a head backward, parameters never receive gradients, no
hook or graph outlives the call, and A and dA stay tensors on the model's device.

A is the output of ``forward_features``: for every family in the registry this is the layer the
paper explains (convnext: last stage; metaformers: last stage; fastvit: ``final_conv`` = the
original code's ``conv_exp``; resnet: ``layer4``; efficientnet: ``conv_head``+``bn2``), with or
without DCLS, because conversion swaps convolutions inside the stages and keeps this structure.
timm models that emit NHWC (``output_fmt == "NHWC"``: swin, mambaout, ...) are permuted to NCHW,
a view, so the head still sees its own layout.

A CA-Stream model (``models.CAStreamModel``) is cut at the same A, and its head is the stream's last
block plus the classifier: the token entering that block depends on the earlier stages' features
only, so it is computed with them, without autograd, and is a constant of the head; dy_t/dA flows
from the token through the last block's attention and values into A.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Union

import torch
from torch import Tensor, nn

from alignbench._utils.precision import forward_autocast
from alignbench.errors import ExplainerError
from alignbench.models._ca_stream import CAStreamModel

Targets = Union[None, int, Sequence[int], Tensor]


@dataclass(frozen=True)
class Split:
    """A timm classifier cut at A: ``features(x)`` -> A in NCHW, ``head(A)`` -> logits."""

    model: nn.Module
    channels_last: bool  # forward_features emits NHWC; A is handed out permuted to NCHW

    def features(self, images: Tensor) -> Tensor:
        a = self.model.forward_features(images)
        if not isinstance(a, Tensor) or a.ndim != 4:
            shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
            raise ExplainerError(
                f"{model_name(self.model)}.forward_features gives {shape}, not a spatial feature map "
                "[B, C, H, W], and it is no ViT/DeiT whose patch tokens lie on a grid; CAM explainers need one "
                "of the two — use saliency or occlusion"
            )
        return a.permute(0, 3, 1, 2) if self.channels_last else a

    def head(self, a: Tensor) -> Tensor:
        return self.model.forward_head(a.permute(0, 2, 3, 1) if self.channels_last else a)

    def cut(self, images: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """A, and the head that maps A (or a copy of it that requires grad) to these images' logits."""
        return self.features(images), self.head


@dataclass(frozen=True)
class StreamSplit(Split):
    """A CA-Stream model cut at A: the head is the last stream block and the classifier, given the
    token the earlier blocks computed from the earlier stages' features of the same images."""

    model: CAStreamModel

    def features(self, images: Tensor) -> Tensor:
        return self.model.forward_features(images)

    def head(self, a: Tensor) -> Tensor:
        raise ExplainerError("a CA-Stream model's head needs the token of the same images; use Split.cut(images)")

    def cut(self, images: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        features = self.model.stream_features(images)
        token = self.model.ca_stream.token_before_last(features)
        return features[-1], partial(self.model.head, token=token)


def model_name(model: nn.Module) -> str:
    """The name to put in a message: the registry name, else timm's architecture, else the class."""
    name = getattr(getattr(model, "alignbench_info", None), "name", None)
    if name:
        return str(name)
    cfg = getattr(model, "pretrained_cfg", None)
    return str((cfg.get("architecture") if isinstance(cfg, dict) else None) or type(model).__name__)


def split_model(model: nn.Module) -> Split:
    """The split at A for a timm model (anything with ``forward_features`` and ``forward_head``)."""
    if isinstance(model, CAStreamModel):
        return StreamSplit(model=model, channels_last=False)
    if not (callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))):
        raise ExplainerError(
            f"{model_name(model)} has no forward_features/forward_head; CAM explainers need a timm "
            "classifier (create it with timm.create_model or alignbench.load_model)"
        )
    spec = getattr(getattr(model, "alignbench_info", None), "spec", None)
    layer = getattr(spec, "target_layer", "forward_features")
    if layer != "forward_features":  # the registry names A; this core splits at forward_features only
        raise ExplainerError(f"{model_name(model)}: target layer {layer!r} is not supported; the explainers split at forward_features")
    if getattr(model, "fork_feat", False):
        raise ExplainerError(f"{model_name(model)} was built with fork_feat=True (a dense-prediction backbone); build it as a classifier")
    fmt = str(getattr(model, "output_fmt", "NCHW"))
    return Split(model=model, channels_last=fmt.upper().endswith("NHWC"))


def model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return torch.device("cpu") if tensor is None else tensor.device


def as_batch(images: Tensor, model: nn.Module) -> Tensor:
    """Images as a float [B, C, H, W] batch on the model's device; a single [C, H, W] image is a batch of one."""
    if not isinstance(images, Tensor):
        raise ExplainerError(f"images must be a torch.Tensor [B, 3, H, W]; got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ExplainerError(f"images must be a [B, 3, H, W] tensor with B >= 1; got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ExplainerError(f"images must be normalised floats (the model's eval transform); got dtype {images.dtype}")
    return images.to(model_device(model))


def resolve_targets(targets: Targets, logits: Tensor) -> Tensor:
    """Target class per image as a long tensor [B]: the given class(es), else the top-1 prediction."""
    batch, num_classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    if isinstance(targets, Tensor):
        if targets.is_floating_point() or targets.is_complex():
            raise ExplainerError(f"targets must be integer class indices; got a {targets.dtype} tensor")
        t = targets.to(device=logits.device, dtype=torch.long).reshape(-1)
    elif isinstance(targets, int):
        t = torch.full((batch,), targets, dtype=torch.long, device=logits.device)
    else:
        try:
            values = [int(v) for v in targets]
        except (TypeError, ValueError):
            raise ExplainerError(f"targets must be None, a class index or one index per image; got {targets!r}") from None
        t = torch.tensor(values, dtype=torch.long, device=logits.device)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ExplainerError(f"got {t.numel()} targets for {batch} images; give one per image or a single class")
    bad = (t < 0) | (t >= num_classes)
    if bool(bad.any()):
        value = int(t[bad][0])
        raise ExplainerError(f"target class {value} is out of range for a model with {num_classes} classes (valid: 0..{num_classes - 1})")
    return t


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """No parameter requires grad inside; every flag is restored exactly afterwards."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside (BatchNorm running stats, no dropout: each image's map depends on that image
    alone, and repeated calls agree); every module's own training flag is restored afterwards."""
    training = [m for m in model.modules() if m.training]
    try:
        if training:  # a model already in eval mode (the scorer's) is left alone
            model.eval()
        yield
    finally:
        for m in training:
            m.training = True


@dataclass(frozen=True)
class Evidence:
    """What every gradient-weighted method reads: A, dy_t/dA (both NCHW), the logits and the targets."""

    activations: Tensor
    gradients: Tensor
    logits: Tensor
    targets: Tensor


def gradient_evidence(model: nn.Module, images: Tensor, targets: Targets = None, *, precision: str = "fp32") -> Evidence:
    """A and dy_t/dA for a batch, from one inference forward and a backward through the head only.

    ``model`` must already be in eval mode (``eval_mode``); y_t is the target logit, pre-softmax.
    ``precision`` bf16/fp16: the two forward passes (features, head) run under autocast; A is taken
    back to float32 before it becomes the leaf, the logits too before y_t is picked, and the
    gradient is taken outside autocast, so A, dy_t/dA and every map made from them are float32.
    """
    split = split_model(model)
    with torch.no_grad(), forward_autocast(images.device, precision):
        a, head = split.cut(images)
    a = a.detach().float().requires_grad_(True)
    with torch.enable_grad(), frozen_parameters(model):
        with forward_autocast(images.device, precision):
            logits = head(a)
        logits = logits.float()
        t = resolve_targets(targets, logits.detach())
        # Summing y_t over the batch gives each image's own gradient in one backward: in eval mode
        # image i's logits depend on A_i alone, so d(sum_j y_j)/dA_i = dy_i/dA_i.
        score = logits.gather(1, t[:, None]).sum()
        (grad,) = torch.autograd.grad(score, a)
    return Evidence(activations=a.detach(), gradients=grad, logits=logits.detach(), targets=t)

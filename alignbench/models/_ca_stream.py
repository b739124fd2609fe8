"""CA-Stream (Torres, Zhang, Sicre, Ayache, Avrithis, CVPR 2024 XAI workshop): a learned class token
that cross-attends to a CNN's features after the stem and after every stage, in place of global
average pooling; the backbone and its classifier stay as they are.

The reference is the official code (github.com/ftorres11/CA_Stream, ``models/transformer.py``
``CLS_Attention`` and ``models/{ResNet,ConvNext,EfficientNet}/*_stream.py``). One block per attachment
point, with features F [B, C, HW] and the token q [B, C]:

    attention logits = qᵀF / √C          one head, no query/key/value projections
    attention        = softmax over HW
    out              = attention · Fᵀ     [B, C]
    token            = proj(out)          Linear C → next point's channels (xavier-uniform weights)

no LayerNorm, no MLP, no residual; the final token goes through the model's own head (its pre-logits
norm where it has one, then its classifier). Known bugs of the official code that are *not* copied:

- its ConvNeXt stream builds the block for the third stage inside ``try: ... except TypeError: pass``
  (the next stage has ``out_channels=None``), so that block is silently dropped and the stream never
  reads the deepest-but-one stage (9 or 27 ConvNeXt blocks); it also reads after each downsampling
  layer rather than after each stage. Here every model gets the same rule: after the stem and after
  every stage (plus ``forward_features``' output where it differs from the last stage's, as the
  official EfficientNet stream reads after ``conv_head``);
- ``CLS_Attention`` scales by ``dim_head ** -0.5`` where ``dim_head`` is the whole input width, which
  is 1/√C only because one head is used: the formula above is written for one head and nothing else;
- ``models/__init__.py`` imports ``dict_resnet_stream`` from ``resnet_final`` and ``dict_resnet_final``
  from ``resnet_stream`` (swapped) and ``covnext_stream`` (a typo), ``transformer.py`` imports a
  ``Light_Shared`` that does not exist, ``resnext50_32x4d_stream`` maps to torchvision's plain ResNeXt
  (no stream) and the ResNet-152/ResNeXt/Wide constructors pass ``project`` positionally into
  ``_resnet`` (a TypeError): the stream here is one generic module for any timm CNN instead.

Training bugs (which parameters train, batch-norm statistics) are noted in ``alignbench.training``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from alignbench.errors import ModelError
from alignbench.models.specs import MODELS

# Stage modules, by the registry's own naming of a stage (``registry.DEFAULT_STAGE_PATTERN``, which
# decides which DCLS convs share positions): timm's ``stages.N`` / ``blocks.N`` / ``layers.N`` /
# ``features.N`` containers and ResNet's top-level ``layerN``.
_STAGE_NAME = re.compile(r"(?:stages|blocks|layers|features)\.\d+|layer\d+")
# Outside that naming, timm's feature_info names the stages; these entries are the stem, not a stage.
_STEM_NAMES = ("stem", "act1", "bn1", "conv1", "conv_stem")


class CrossAttentionBlock(nn.Module):
    """One CA-Stream block (the official ``CLS_Attention`` with one head, ``project_out=True``,
    dropout 0): the token attends over the positions of one feature map, then ``proj`` maps it to
    the next attachment point's width."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.scale = channels**-0.5  # 1/√C (scaled dot-product attention, one head of width C)
        self.proj = nn.Linear(channels, out_channels)
        nn.init.xavier_uniform_(self.proj.weight)  # as CLS_Attention; the bias keeps Linear's default

    def forward(self, features: Tensor, token: Tensor) -> tuple[Tensor, Tensor]:
        """(attention logits [B, 1, H, W], new token [B, C_next]) from features [B, C, H, W] and a token [B, C]."""
        b, c, h, w = features.shape
        if c != self.channels or token.shape[-1] != c:
            raise ModelError(f"CA-Stream block for {self.channels} channels got features of {c} and a token of {token.shape[-1]}")
        # F is flattened for each of its two uses, so that dF arrives as the sum of two gradients, a
        # tensor of its own rather than a view (pytorch-grad-cam detaches stored gradients in place,
        # which a view refuses).
        logits = torch.bmm(token.unsqueeze(1), features.flatten(2)) * self.scale  # [B, 1, HW]
        out = torch.bmm(logits.softmax(dim=-1), features.flatten(2).transpose(1, 2)).squeeze(1)  # [B, C]
        return logits.view(b, 1, h, w), self.proj(out)


class CAStream(nn.Module):
    """The stream: ``cls_token`` [1, 1, C0] and one ``CrossAttentionBlock`` per attachment point."""

    def __init__(self, channels: Sequence[int], out_features: int) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        widths = (*self.channels[1:], int(out_features))
        # N(1, 1), as the official code (torch.normal(mean=ones, std=ones))
        self.cls_token = nn.Parameter(torch.normal(torch.ones(1, 1, self.channels[0]), torch.ones(1, 1, self.channels[0])))
        self.blocks = nn.ModuleList(CrossAttentionBlock(c, n) for c, n in zip(self.channels, widths))

    @property
    def out_features(self) -> int:
        return self.blocks[-1].proj.out_features

    def initial_token(self, batch: int) -> Tensor:
        return self.cls_token.expand(batch, 1, -1).reshape(batch, -1)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """(attention logits of every block, final token [B, out_features]) for the features at every point."""
        if len(features) != len(self.blocks):
            raise ModelError(f"CA-Stream has {len(self.blocks)} blocks but got {len(features)} feature maps")
        token = self.initial_token(features[0].shape[0])
        attention = []
        for block, f in zip(self.blocks, features):
            logits, token = block(f, token)
            attention.append(logits)
        return attention, token

    def token_before_last(self, features: Sequence[Tensor]) -> Tensor:
        """The token entering the last block: it depends on the earlier points' features only."""
        token = self.initial_token(features[0].shape[0])
        for block, f in zip(self.blocks[:-1], features[: len(self.blocks) - 1]):
            token = block(f, token)[1]
        return token

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def stream_parameter_count(channels: Sequence[int], out_features: int) -> int:
    """Parameters of a stream over these attachment widths (the token plus each block's Linear)."""
    widths = (*channels[1:], out_features)
    return int(channels[0]) + sum(c * n + n for c, n in zip(channels, widths))


@dataclass(frozen=True)
class Attachments:
    """Where the stream reads a backbone: the input of the first stage (= after the stem), the output
    of every stage, and ``forward_features``' output when it is not the last stage's (EfficientNet's
    ``conv_head``+``bn2``, FastViT's ``final_conv``), so that the last point is always Grad-CAM's A."""

    stages: tuple[str, ...]  # qualified module names, in forward order
    after_forward_features: bool
    channels: tuple[int, ...]  # at each point: stem, every stage, [forward_features]
    out_features: int  # width of the head's input (= channels[-1])


def _stage_names(model: nn.Module) -> list[str]:
    modules = dict(model.named_modules())
    named = [name for name in modules if _STAGE_NAME.fullmatch(name)]
    if named:
        return named
    info = getattr(model, "feature_info", None)
    try:
        names = [entry["module"] for entry in info]
    except (TypeError, KeyError):
        return []
    return [name for name in names if name in modules and not name.startswith(_STEM_NAMES)]


def _why_not(model: nn.Module, name: str) -> str | None:
    if getattr(model, "num_prefix_tokens", None) is not None:  # timm's ViT family
        return f"{name} is a token transformer: its blocks give tokens [B, N, C], not stage feature maps"
    if str(getattr(model, "output_fmt", "NCHW")).upper().endswith("NHWC"):
        return f"{name}'s stages give channels-last (NHWC) maps; the stream reads NCHW stage outputs"
    if not callable(getattr(model, "forward_features", None)) or not callable(getattr(model, "forward_head", None)):
        return f"{name} has no forward_features/forward_head (not a timm classifier)"
    return None


def _refuse(reason: str) -> ModelError:
    return ModelError(
        f"--ca-stream needs a CNN whose stages give [B, C, H, W] feature maps; {reason}. "
        f"Models that take it: {', '.join(MODELS)} (and other timm CNNs)"
    )


class _Capture:
    """Forward hooks on the stage modules for one call: the first stage's input and every stage's output."""

    def __init__(self, model: nn.Module, stages: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        self.modules = [modules[name] for name in stages]
        self.outputs: list[object] = []
        self.versions: list[int | None] = []

    def _keep(self, value: object) -> None:
        self.outputs.append(value)
        tracked = isinstance(value, Tensor) and not value.is_inference()
        self.versions.append(value._version if tracked else None)

    def __enter__(self) -> _Capture:
        first = self.modules[0]
        self.handles = [first.register_forward_pre_hook(lambda _m, args: self._keep(args[0]))]
        self.handles += [m.register_forward_hook(lambda _m, _a, out: self._keep(out)) for m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def check_unmodified(self) -> None:
        """A stage output that a later layer changed in place would reach the stream altered; timm's
        CNNs do not do that, and this makes sure (inference tensors carry no version counter)."""
        for value, version in zip(self.outputs, self.versions):
            if version is not None and value._version != version:
                raise ModelError("a stage output was modified in place by a later layer; the CA-Stream cannot read it")


def attachment_plan(model: nn.Module, name: str | None = None, input_size: Sequence[int] | None = None) -> Attachments:
    """The attachment points of a timm CNN, found by one probe forward at its input size (on the
    model's device: the meta device costs nothing). Raises ModelError naming the problem (a ViT, a
    channels-last model, no stages) and the models that take a stream."""
    name = name or type(model).__name__
    reason = _why_not(model, name)
    stages = _stage_names(model) if reason is None else []
    if reason is None and not stages:
        reason = f"{name} has no stages that alignbench can find (stages.N, blocks.N, layerN or feature_info)"
    if reason is not None:
        raise _refuse(reason)
    size = tuple(input_size or (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224)))[-2:]
    reference = next(iter(model.parameters()), None)
    probe = torch.zeros(
        1,
        3,
        *size,
        device=reference.device if reference is not None else "cpu",
        dtype=reference.dtype if reference is not None else torch.float32,
    )
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), _Capture(model, stages) as capture:
            a = model.forward_features(probe)
    finally:
        model.train(was_training)
    maps = [*capture.outputs, a]
    for value in maps:
        if not isinstance(value, Tensor) or value.ndim != 4:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise _refuse(f"{name}'s stages give {shape}, not feature maps [B, C, H, W]")
    if len(capture.outputs) != len(stages) + 1:
        raise _refuse(f"{name}'s stage modules ran {len(capture.outputs) - 1} times for {len(stages)} stages")
    after = a is not capture.outputs[-1]
    if not after:
        maps = maps[:-1]
    channels = tuple(int(m.shape[1]) for m in maps)
    return Attachments(tuple(stages), after, channels, channels[-1])


class CAStreamModel(nn.Module):
    """A timm CNN (``backbone``, frozen: weights, classifier, batch-norm statistics) whose head reads
    the CA-Stream's token (``ca_stream``) instead of globally pooled features.

    ``forward_features`` is the backbone's (Grad-CAM's A, the stream's last point); ``classify`` is
    the backbone's own ``forward_head`` applied to the token as a 1×1 map, so global pooling passes it
    through unchanged and the model's pre-logits norm (ConvNeXt, MetaFormer) and classifier apply.
    The backbone stays in eval mode whatever ``train()`` is called with.
    """

    def __init__(self, backbone: nn.Module, attachments: Attachments, stream: CAStream | None = None) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.attachments = attachments
        self.ca_stream = stream if stream is not None else CAStream(attachments.channels, attachments.out_features)
        if self.ca_stream.channels != attachments.channels or self.ca_stream.out_features != attachments.out_features:
            raise ModelError(f"stream widths {self.ca_stream.channels} do not fit the backbone's {attachments.channels}")
        self.backbone.eval()

    # timm attributes the rest of alignbench reads (data config, class count, output layout)
    @property
    def num_classes(self) -> int:
        return int(getattr(self.backbone, "num_classes", 0) or 0)

    @property
    def pretrained_cfg(self) -> dict:
        return getattr(self.backbone, "pretrained_cfg", None) or {}

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def train(self, mode: bool = True) -> CAStreamModel:
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics and dropout as at inference, always
        return self

    def forward_features(self, images: Tensor) -> Tensor:
        return self.backbone.forward_features(images)

    def stream_features(self, images: Tensor) -> list[Tensor]:
        """The backbone's features at every attachment point; the last is ``forward_features``' output.

        No autograd graph is built through the backbone unless something asks for one (the input
        requires grad, e.g. FullGrad): its parameters never require grad.
        """
        with _Capture(self.backbone, self.attachments.stages) as capture:
            a = self.backbone.forward_features(images)
        maps = [*capture.outputs, a] if self.attachments.after_forward_features else [*capture.outputs[:-1], a]
        capture.check_unmodified()
        return maps

    def classify(self, token: Tensor) -> Tensor:
        """Logits from a final token [B, C]: the backbone's head on it as a 1×1 map."""
        return self.backbone.forward_head(token[:, :, None, None])

    def head(self, a: Tensor, token: Tensor) -> Tensor:
        """Logits from A (the last point's features) and the token entering the last block."""
        return self.classify(self.ca_stream.blocks[-1](a, token)[1])

    def forward_with_attention(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(logits, attention logits [B, 1, H, W] of every block)."""
        attention, token = self.ca_stream(self.stream_features(images))
        return self.classify(token), attention

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_with_attention(images)[0]


def add_ca_stream(backbone: nn.Module, name: str | None = None, input_size: Sequence[int] | None = None) -> CAStreamModel:
    """``backbone`` with a fresh stream (draws from torch's global RNG: seed it for a reproducible init)."""
    return CAStreamModel(backbone, attachment_plan(backbone, name, input_size))


def stream_state_dict(model: CAStreamModel) -> dict[str, Tensor]:
    """The stream's parameters only (what a stream checkpoint holds), each its own contiguous copy."""
    return {key: value.detach().cpu().clone().contiguous() for key, value in model.ca_stream.state_dict().items()}


def as_stream_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A stream state from a file: its own keys, or a whole CAStreamModel's with only ``ca_stream.`` keys."""
    if state and all(key.startswith("ca_stream.") for key in state):
        return {key.removeprefix("ca_stream."): value for key, value in state.items()}
    return state


def is_stream_state(state: dict[str, Tensor]) -> bool:
    """Whether a state_dict looks like a CA-Stream checkpoint (a class token and projection blocks)."""
    state = as_stream_state(state)
    return "cls_token" in state and any(re.fullmatch(r"blocks\.\d+\.proj\.weight", key) for key in state)

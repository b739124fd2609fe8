"""The training objective: a weighted sum of loss terms, computed inside one module that DDP can wrap.

Every term reads one ``Forward`` of the batch (the model's logits, and A = forward_features when a
term needs it) and returns a scalar; the step's loss is Σ weight · term. Terms here: cross-entropy,
Grad-CAM consistency (Pillai & Pirsiavash) and distillation from a teacher's logits. A new method
adds a term (or a model whose forward already does what it needs, as CA-Stream's pooling), never a
second training loop.

``TrainingStep`` is the model plus the terms as one ``nn.Module``: DistributedDataParallel wraps it,
so everything that touches the parameters — including the consistency loss's ∂y/∂A, taken with
``create_graph`` — runs inside the wrapped forward, where DDP expects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignbench.explainers import Split, split_model
from alignbench.training._double_backward import grouped_conv_double_backward
from alignbench.training._gc_consistency import consistency_from_features, features_of


@dataclass
class Forward:
    """One forward pass of a batch, shared by the loss terms."""

    model: nn.Module
    batch: dict[str, Tensor]
    logits: Tensor
    split: Split | None = None
    features: Tensor | None = None  # A, when some term needs it
    shared: dict[Any, Tensor] = field(default_factory=dict)  # what several terms read (a teacher's logits)

    @property
    def images(self) -> Tensor:
        return self.batch["image"]

    @property
    def labels(self) -> Tensor:
        return self.batch["label"]


class LossTerm(Protocol):
    name: str  # its column in the step log
    weight: float
    needs_features: bool

    def __call__(self, forward: Forward) -> Tensor: ...


def teacher_logits(forward: Forward, teacher: nn.Module) -> Tensor:
    """``teacher``'s logits of the batch, computed once per forward however many terms read them."""
    key = ("teacher", id(teacher))
    if key not in forward.shared:
        with torch.no_grad():
            forward.shared[key] = teacher(forward.images.detach())
    return forward.shared[key]


@dataclass
class CrossEntropy:
    name: str = "ce"
    weight: float = 1.0
    needs_features: bool = False
    label_smoothing: float = 0.0

    def __call__(self, forward: Forward) -> Tensor:
        if self.label_smoothing:
            return F.cross_entropy(forward.logits.float(), forward.labels, label_smoothing=self.label_smoothing)
        return F.cross_entropy(forward.logits, forward.labels)


@dataclass
class GradCamConsistency:
    """λ · GC, the composites of the batch (``composite``, ``quadrant``) scored against its images."""

    weight: float
    name: str = "gc"
    needs_features: bool = True

    def __call__(self, forward: Forward) -> Tensor:
        batch = forward.batch
        return consistency_from_features(
            forward.split, forward.features, forward.logits, forward.labels, batch["composite"], batch["quadrant"]
        )


@dataclass
class Distillation:
    """KL(teacher ‖ student) of the class distributions: keeps the student's function near the
    teacher's (e.g. a from-dense DCLS model near its dense original) while its positions move."""

    teacher: nn.Module = field(repr=False)
    weight: float = 1.0
    name: str = "distill"
    needs_features: bool = False

    def __call__(self, forward: Forward) -> Tensor:
        target = teacher_logits(forward, self.teacher)
        return F.kl_div(
            F.log_softmax(forward.logits.float(), dim=1), F.log_softmax(target.float(), dim=1), log_target=True, reduction="batchmean"
        )


class TrainingStep(nn.Module):
    """``forward(batch)`` → {"loss", "logits", "labels", "terms"}: the objective of one batch (see the module docstring)."""

    def __init__(self, model: nn.Module, terms: list[Any]) -> None:
        super().__init__()
        self.model = model
        # a plain tuple: a teacher inside a term is not a submodule (not trained, saved or synchronised)
        self.terms = tuple(terms)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        if any(getattr(term, "needs_input_grad", False) for term in self.terms):  # a term differentiates the logits in the images
            with grouped_conv_double_backward():
                return self._forward({**batch, "image": batch["image"].detach().requires_grad_(True)})
        return self._forward(batch)

    def _forward(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        images = batch["image"]
        if any(term.needs_features for term in self.terms):
            split = split_model(self.model)
            features = features_of(split, images)
            forward = Forward(self.model, batch, split.head(features), split, features)
        else:
            forward = Forward(self.model, batch, self.model(images))
        values = {term.name: term(forward) for term in self.terms}
        loss = sum(term.weight * values[term.name] for term in self.terms)
        # what the step's accuracy is measured against: the label, or where an image has none (scenes
        # under --distill-from), the teacher's top-1, which the terms trained towards
        labels = batch["label"]
        teachers = [logits for key, logits in forward.shared.items() if key[0] == "teacher"]
        if teachers and bool((labels < 0).any()):
            labels = torch.where(labels < 0, teachers[0].argmax(dim=1), labels)
        terms = {name: value.detach() for name, value in values.items()}
        return {"loss": loss, "logits": forward.logits, "labels": labels, "terms": terms}

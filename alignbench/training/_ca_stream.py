"""CA-Stream training: only the stream learns; the backbone (weights, classifier, batch-norm
statistics) is the model it was, bit for bit.

The official recipe (ftorres11/CA_Stream ``engine/utils.py`` ``ResNetPytorchOpt``, used by
``main_INets.py``): cross-entropy on the classifier's logits, SGD with momentum 0.9 (not Nesterov),
lr 0.1, weight decay 1e-4 on every stream parameter (one group, the token included), MultiStepLR at
epochs 30, 60, 90 with ×0.1 (stepped after each epoch; its README trains 90 epochs). Here the
optimiser and the schedule come from timm's factories: ``opt="momentum"`` (timm's ``"sgd"`` is
Nesterov) and ``sched="step"`` every 30 epochs, which is that schedule for up to 120 epochs (timm's
``"multistep"`` counts ``t + 1`` and would decay one epoch early).

Bugs of the official training that are *not* copied:

- ``backbone_freezer`` trains the parameters whose *name* contains ``cls``. The ResNet stream's
  blocks are named ``base``, ``l1``-``l4``, so there only ``cls_token`` learned and every projection
  stayed at its random init. Here exactly the parameters of ``model.ca_stream`` train.
- ``stats_disabler``, meant to put the backbone's norm layers in eval mode, iterates
  ``named_parameters()`` (calling ``.eval()`` on a tensor) and matches ``norm``, which torchvision's
  BatchNorm names (``bn1``, ``features.N.1``) never contain: the "frozen" backbone trained in train
  mode, normalising by batch statistics and moving its running statistics (then averaged across
  GPUs by ``distribute_bn``). Here the backbone stays in eval mode (``CAStreamModel.train``) and its
  features are computed without autograd (its parameters never require grad); a test checks that
  every backbone tensor is bit-identical after training.
- ``main_INets.py`` reads ``args.increased``, which no option defines, unless ``--ftune`` is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignbench.errors import ModelError
from alignbench.models._ca_stream import CAStreamModel


@dataclass(frozen=True)
class StreamRecipe:
    """The official CA-Stream recipe; every field can be overridden."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decay_epochs: int = 30  # step decay every this many epochs
    decay_rate: float = 0.1


@dataclass
class StreamTraining:
    """What ``train_ca_stream`` did: the loss and top-1 of every step, per-epoch means."""

    steps: int = 0
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float | None:
        return self.epoch_losses[-1] if self.epoch_losses else None


def stream_model(model: nn.Module) -> CAStreamModel:
    """``model`` checked to be a CA-Stream model whose backbone is frozen (nothing in it requires grad)."""
    if not isinstance(model, CAStreamModel):
        raise ModelError("training the CA-Stream needs a model loaded with --ca-stream (load_model(..., ca_stream=True))")
    if any(p.requires_grad for p in model.backbone.parameters()):
        raise ModelError("the CA-Stream trains with the backbone frozen; a backbone parameter requires grad")
    return model


def stream_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that train: the stream's, all of them, and nothing else."""
    return list(stream_model(model).ca_stream.parameters())


def stream_optimizer(model: nn.Module, recipe: StreamRecipe = StreamRecipe(), epochs: int = 90):
    """(optimizer, scheduler) of the recipe over the stream's parameters, from timm's factories; the
    scheduler steps once per epoch (``scheduler.step(epoch + 1)``)."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    # One group with weight decay on every tensor, as the official optimiser (a plain parameter list
    # is not split into decay / no-decay groups by timm).
    optimizer = create_optimizer_v2(
        stream_parameters(model), opt="momentum", lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="step", num_epochs=epochs, decay_epochs=recipe.decay_epochs, decay_rate=recipe.decay_rate
    )
    return optimizer, scheduler


def stream_loss(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(cross-entropy of the frozen classifier's logits on the stream's token, the logits)."""
    logits = stream_model(model)(images)
    return F.cross_entropy(logits, labels), logits


def train_step(model: nn.Module, images: Tensor, labels: Tensor, optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    """One optimiser step on one batch; (loss, top-1) of the batch before the step."""
    model.train()  # the stream only: CAStreamModel keeps its backbone in eval mode
    optimizer.zero_grad(set_to_none=True)
    loss, logits = stream_loss(model, images, labels)
    loss.backward()
    optimizer.step()
    accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
    return float(loss.detach()), float(accuracy)


def train_ca_stream(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    *,
    epochs: int = 1,
    recipe: StreamRecipe = StreamRecipe(),
    on_step: Callable[[int, float, float], None] | None = None,
) -> StreamTraining:
    """Train ``model``'s stream on (images, labels) batches for ``epochs`` with the recipe; the model
    is left in eval mode. ``on_step(step, loss, top1)`` is called after every step."""
    model = stream_model(model)
    device = next(model.ca_stream.parameters()).device
    optimizer, scheduler = stream_optimizer(model, recipe, epochs)
    result = StreamTraining()
    try:
        for epoch in range(epochs):
            epoch_losses = []
            for images, labels in loader:
                loss, accuracy = train_step(model, images.to(device), labels.to(device), optimizer)
                result.steps += 1
                result.losses.append(loss)
                result.accuracies.append(accuracy)
                epoch_losses.append(loss)
                if on_step is not None:
                    on_step(result.steps, loss, accuracy)
            result.epoch_losses.append(sum(epoch_losses) / max(1, len(epoch_losses)))
            scheduler.step(epoch + 1)
    finally:
        model.eval()
    return result

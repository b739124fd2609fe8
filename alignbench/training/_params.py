"""Which parameters train, and the optimiser's parameter groups (one function, as timm's train.py).

Groups follow ConvNeXt-dcls ``optim_factory.get_parameter_groups``: weights with weight decay;
biases, norm parameters and the model's ``no_weight_decay()`` without; the DCLS positions (P, and SIG)
in a group of their own without weight decay and with their own learning rate (the scheduled rate × 5
there; ``--positions-lr`` here). timm's ``param_groups_weight_decay`` makes the first two but cannot
set the positions apart, hence this function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from alignbench.errors import TrainingError
from alignbench.training._request import FreezeMode, position_parameters


@dataclass(frozen=True)
class Trainable:
    """What trains: counts for the summary, and the batch-norm layers kept in eval mode."""

    parameters: int  # trainable scalars
    positions: int  # of which DCLS positions
    total: int
    frozen_norms: tuple[nn.Module, ...]


def freeze(model: nn.Module, mode: FreezeMode) -> Trainable:
    """Leave only ``mode.trainable(model)`` requiring grad. Batch-norm layers with nothing to train
    keep their running statistics (they stay in eval mode during training, see ``train_mode``)."""
    chosen = {id(p) for p in mode.trainable(model)}
    if not chosen:
        raise TrainingError(f"--freeze {mode.name} leaves nothing to train in this model ({mode.description})")
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in chosen)
    positions = {id(p) for p in position_parameters(model)}
    unique = {id(p): p for p in model.parameters()}.values()
    frozen_norms = tuple(
        module for module in model.modules() if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters())
    )
    return Trainable(
        parameters=sum(p.numel() for p in unique if p.requires_grad),
        positions=sum(p.numel() for p in unique if p.requires_grad and id(p) in positions),
        total=sum(p.numel() for p in unique),
        frozen_norms=frozen_norms,
    )


def train_mode(model: nn.Module, trainable: Trainable) -> None:
    """Training mode, except the frozen batch-norm layers (their statistics are part of what is fixed)."""
    model.train()
    for module in trainable.frozen_norms:
        module.eval()


def param_groups(model: nn.Module, *, weight_decay: float, positions_lr: float) -> list[dict]:
    """The optimiser's groups over the parameters that require grad (see the module docstring)."""
    positions = {id(p) for p in position_parameters(model)}
    skip = set(getattr(model, "no_weight_decay", lambda: ())())
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "positions": []}
    for name, parameter in model.named_parameters():  # each shared tensor once
        if not parameter.requires_grad:
            continue
        if id(parameter) in positions:
            groups["positions"].append(parameter)
        elif parameter.ndim <= 1 or name.endswith(".bias") or name in skip:
            groups["no_decay"].append(parameter)
        else:
            groups["decay"].append(parameter)
    settings = {
        "decay": {"weight_decay": weight_decay},
        "no_decay": {"weight_decay": 0.0},
        # an explicit lr: timm's schedulers scale each group's own initial rate
        "positions": {"weight_decay": 0.0, "lr": positions_lr},
    }
    return [{"params": params, "group_name": name, **settings[name]} for name, params in groups.items() if params]


@torch.no_grad()
def unpin_positions(model: nn.Module, offset: float) -> int:
    """Move the trainable v1 position coordinates that sit exactly on integers by ``offset`` pixels
    towards the span's centre, so none leaves it (see ``POSITIONS_OFFSET``); returns how many moved. v0 (the fractional part has slope 1) and
    gauss (a Gaussian) have gradients there already."""
    moved, seen = 0, set()
    for module in model.modules():
        position = getattr(module, "P", None)
        if getattr(module, "version", None) != "v1" or position is None or not position.requires_grad or id(position) in seen:
            continue
        seen.add(id(position))
        on_grid = position == position.round()
        moved += int(on_grid.sum())
        towards_centre = torch.where(position > 0, -offset, offset)
        position.add_(torch.where(on_grid, towards_centre, 0.0))
    return moved

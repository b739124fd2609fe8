"""CA-Stream training (torch-free data): what trains, the official recipe, and the official code's
training bugs that are not copied. The loop is ``alignbench train``'s own: a ``CAStreamModel``'s
forward already pools with the stream, so cross-entropy on its logits is the method's objective.

The official recipe (ftorres11/CA_Stream ``engine/utils.py`` ``ResNetPytorchOpt``, used by
``main_INets.py``): cross-entropy on the frozen classifier's logits, SGD with momentum 0.9 (not
Nesterov: timm's ``"momentum"``, whose ``"sgd"`` is Nesterov), lr 0.1, weight decay 1e-4,
MultiStepLR at epochs 30, 60, 90 with ×0.1 (its README trains 90 epochs): here timm's ``"step"``
schedule every 30 epochs, the same schedule for up to 120 epochs. One difference: the official
optimiser decays every stream tensor, alignbench's parameter groups (shared by every method, as
timm's) spare the biases.

Bugs of the official training that are *not* copied:

- ``backbone_freezer`` trains the parameters whose *name* contains ``cls``. The ResNet stream's
  blocks are named ``base``, ``l1``-``l4``, so there only ``cls_token`` learned and every projection
  stayed at its random init. Here exactly the parameters of ``model.ca_stream`` train.
- ``stats_disabler``, meant to put the backbone's norm layers in eval mode, iterates
  ``named_parameters()`` (calling ``.eval()`` on a tensor) and matches ``norm``, which torchvision's
  BatchNorm names (``bn1``, ``features.N.1``) never contain: the "frozen" backbone trained in train
  mode, normalising by batch statistics and moving its running statistics (then averaged across
  GPUs by ``distribute_bn``). Here the backbone stays in eval mode (``CAStreamModel.train``) and its
  parameters never require grad, so its features are computed without autograd; a test checks that
  every backbone tensor is bit-identical after training.
- ``main_INets.py`` reads ``args.increased``, which no option defines, unless ``--ftune`` is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

from alignbench.errors import TrainingError

METHOD = "ca-stream"  # the store's origin of a trained stream
FREEZE = "all-but-stream"

# TrainRequest fields the method sets unless the request gives them (see the module docstring); the
# momentum (0.9) and the decay rate (×0.1) are alignbench's defaults already.
RECIPE = MappingProxyType({"opt": "momentum", "lr": 0.1, "weight_decay": 1e-4, "sched": "step", "decay_epochs": 30.0})


def stream_parameters(model: Any) -> Iterator[Any]:
    """The parameters that train: every one of the stream's, and nothing else."""
    stream = getattr(model, "ca_stream", None)
    if stream is None:
        raise TrainingError("--freeze all-but-stream trains a CA-Stream: add --ca-stream")
    yield from stream.parameters()

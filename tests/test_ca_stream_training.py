"""Training the CA-Stream: only the stream learns, the backbone stays bit-identical, the recipe is the official one."""

from __future__ import annotations

import copy

import pytest
import torch

from alignbench.errors import ModelError
from alignbench.models import load_model
from alignbench.training._ca_stream import (StreamRecipe, stream_optimizer, stream_parameters, train_ca_stream,
                                            train_step)

SIZE = 64


def stream_model(name: str = "test_resnet"):
    return load_model(name, pretrained=False, ca_stream=True)


def batches():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, SIZE, SIZE, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    return [(images[:4], labels[:4]), (images[4:], labels[4:])]


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_training_lowers_the_loss_and_leaves_every_backbone_tensor_bit_identical(name) -> None:
    torch.manual_seed(0)
    model = stream_model(name)
    backbone = {key: value.clone() for key, value in model.backbone.state_dict().items()}
    stream = {key: value.clone() for key, value in model.ca_stream.state_dict().items()}
    result = train_ca_stream(model, batches(), epochs=4)
    assert result.steps == 8 and len(result.epoch_losses) == 4
    losses = result.epoch_losses
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    after = model.backbone.state_dict()
    # weights, classifier, batch-norm running statistics and step counters: unchanged, bit for bit
    assert any("running_mean" in key for key in after) and any(key.startswith(("fc.", "classifier.")) for key in after)
    for key, value in backbone.items():
        assert torch.equal(after[key], value), key
    # every stream tensor learned: the projections too (the official ResNet freezer trained only cls_token)
    for key, value in model.ca_stream.state_dict().items():
        assert not torch.equal(value, stream[key]), key
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not model.training and not model.backbone.training


def test_the_backbone_would_have_moved_in_train_mode() -> None:
    """The bit-identity above means something: one forward in train mode moves the BN statistics."""
    model = stream_model()
    backbone = copy.deepcopy(model.backbone).train()
    before = backbone.bn1.running_mean.clone()
    backbone(batches()[0][0])
    assert not torch.equal(backbone.bn1.running_mean, before)


def test_the_backbone_runs_in_eval_mode_and_without_autograd_while_training() -> None:
    model = stream_model()
    model.train()
    assert model.training and model.ca_stream.training
    assert not any(m.training for m in model.backbone.modules())
    images = batches()[0][0]
    with torch.enable_grad():
        features = model.stream_features(images)
    assert all(f.grad_fn is None and not f.requires_grad for f in features)  # no graph through the backbone
    optimizer, _ = stream_optimizer(model)
    loss, accuracy = train_step(model, *batches()[0], optimizer)
    assert loss > 0 and 0 <= accuracy <= 1


def test_the_official_recipe_is_the_default() -> None:
    model = stream_model()
    optimizer, scheduler = stream_optimizer(model, StreamRecipe(), epochs=100)
    assert type(optimizer) is torch.optim.SGD and len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.1, 0.9, 1e-4, False)
    assert {id(p) for p in group["params"]} == {id(p) for p in model.ca_stream.parameters()}
    lrs = {}
    for epoch in (29, 30, 59, 60, 90):  # MultiStepLR([30, 60, 90]) stepped after every epoch
        scheduler.step(epoch)
        lrs[epoch] = optimizer.param_groups[0]["lr"]
    assert lrs == pytest.approx({29: 0.1, 30: 0.01, 59: 0.01, 60: 0.001, 90: 0.0001})
    custom, _ = stream_optimizer(model, StreamRecipe(lr=0.01, weight_decay=0.0), epochs=5)
    assert (custom.param_groups[0]["lr"], custom.param_groups[0]["weight_decay"]) == (0.01, 0.0)


def test_training_needs_a_stream_model_with_a_frozen_backbone() -> None:
    with pytest.raises(ModelError, match="needs a model loaded with --ca-stream"):
        stream_parameters(load_model("test_resnet", pretrained=False))
    model = stream_model()
    model.backbone.layer1.requires_grad_(True)
    with pytest.raises(ModelError, match="backbone frozen"):
        train_ca_stream(model, batches())

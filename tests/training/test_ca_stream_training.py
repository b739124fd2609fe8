"""`alignbench train --ca-stream`: only the stream learns, the backbone stays bit-identical, the
official recipe is the default, the stream checkpoint and its lineage land in the store."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.errors import TrainingError
from alignbench.models import ModelRequest, load_model, model_identity
from alignbench.models._checkpoint import read_metadata
from alignbench.testing.tolerance import EPS64, float32_relative
from alignbench.training import TrainRequest, train

STREAM = ModelRequest("test_resnet", pretrained=False, ca_stream=True)


def request(tmp_path, **options) -> TrainRequest:
    settings = dict(
        model=STREAM, data="sample", out=tmp_path / "run", steps=8, batch_size=5, img_size=64, aug=False, workers=0, device="cpu"
    )
    return TrainRequest(**{**settings, **options})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short CA-Stream training of test_resnet on the embedded images (2 steps per epoch, 4 epochs)."""
    tmp = tmp_path_factory.mktemp("ca_train")
    db = f"sqlite:///{tmp / 'store.db'}"
    result = train(request(tmp), db=db)
    return result, db, tmp / "run"


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_only_the_stream_trains_and_the_loss_goes_down(trained) -> None:
    result, _, out = trained
    assert result.method == "ca-stream" and result.ca_stream and result.steps == 8
    assert result.trainable_parameters == load_model(STREAM).ca_stream.parameter_count()
    losses = [row["loss"] for row in _log(out) if row["event"] == "step"]
    epochs = [sum(losses[i : i + 2]) / 2 for i in range(0, 8, 2)]  # the same 10 images every epoch
    assert all(later < earlier for earlier, later in zip(epochs, epochs[1:])), epochs


def test_every_backbone_tensor_is_bit_identical_after_training(trained) -> None:
    """The in-training model (last.pt holds its whole state) against a freshly loaded backbone:
    weights, classifier, batch-norm running statistics and step counters, bit for bit."""
    _, _, out = trained
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)["model"]
    fresh = load_model(STREAM)
    backbone = fresh.backbone.state_dict()
    assert any("running_var" in key for key in backbone) and "fc.weight" in backbone
    for key, value in backbone.items():
        assert torch.equal(state[f"backbone.{key}"], value), key
    # the projections learn (the official ResNet freezer trained cls_token alone). On this random
    # backbone the first blocks' gradients are ~1e-13 (each block scales them by the features'
    # attention-weighted covariance / √C), below float32 resolution: the last two blocks show it.
    for key in ("blocks.3.proj.weight", "blocks.3.proj.bias", "blocks.4.proj.weight", "blocks.4.proj.bias"):
        assert not torch.equal(state[f"ca_stream.{key}"], fresh.ca_stream.state_dict()[key]), key


def test_the_backbone_would_have_moved_in_train_mode() -> None:
    """The bit-identity above means something: one forward in train mode moves the BN statistics."""
    backbone = copy.deepcopy(load_model(STREAM).backbone).train()
    before = backbone.bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    assert not torch.equal(backbone.bn1.running_mean, before)


def test_the_backbone_runs_in_eval_mode_and_without_autograd() -> None:
    model = load_model(STREAM)
    model.train()
    assert model.training and model.ca_stream.training
    assert not any(m.training for m in model.backbone.modules())
    with torch.enable_grad():
        features = model.stream_features(torch.randn(2, 3, 64, 64))
    assert all(f.grad_fn is None and not f.requires_grad for f in features)  # no graph through the backbone


def test_the_checkpoint_holds_the_stream_alone_and_loads_as_the_trained_model(trained) -> None:
    result, db, out = trained
    with safe_open(str(out / "last.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == set(load_model(STREAM).ca_stream.state_dict())
    assert read_metadata(out / "last.safetensors") == {"model": "test_resnet", "part": "ca-stream"}
    from alignbench.scoring import trained_request

    again = load_model(trained_request(result.tag, db))
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)["model"]
    for key, value in again.ca_stream.state_dict().items():
        assert torch.equal(value, state[f"ca_stream.{key}"])


def test_the_store_records_the_stream_with_the_pooled_model_as_parent(trained) -> None:
    result, db, _ = trained
    from alignbench.store import open_store
    from alignbench.store.queries import trained_models

    pooled = model_identity("test_resnet", pretrained=False)
    assert result.parent_fingerprint == pooled.fingerprint
    with open_store(db) as store, store.session() as session:
        [(row, parent)] = trained_models(session)
        assert (row.origin, row.ca_stream, row.tag) == ("ca-stream", True, result.tag)
        assert (parent.weights_fingerprint, parent.ca_stream) == (pooled.fingerprint, False)
        assert parent.param_count == sum(p.numel() for p in load_model("test_resnet", pretrained=False).parameters())
        lineage = json.loads(row.lineage)
        assert lineage["method"] == "ca-stream" and lineage["parent"] == pooled.fingerprint
        assert json.loads(row.request)["stream_checkpoint"] == str(result.last)


def test_the_official_recipe_is_the_default_and_can_be_overridden(tmp_path, trained) -> None:
    default = request(tmp_path)
    assert (default.opt, default.lr, default.weight_decay, default.momentum, default.sched, default.decay_epochs, default.decay_rate) == (
        "momentum",
        0.1,
        1e-4,
        0.9,
        "step",
        30.0,
        0.1,
    )
    assert default.freeze_mode.name == "all-but-stream"
    assert {row["lr"] for row in _log(trained[2]) if row["event"] == "step"} == {0.1}  # 4 epochs: no decay yet
    custom = request(tmp_path, opt="adamw", lr=1e-3, sched="cosine")
    assert (custom.opt, custom.lr, custom.weight_decay, custom.sched) == ("adamw", 1e-3, 1e-4, "cosine")
    plain = TrainRequest(model="test_resnet", data="sample", out=tmp_path / "plain")
    assert (plain.opt, plain.lr, plain.weight_decay, plain.sched) == ("adamw", 1e-4, 0.05, "cosine")


def test_step_decay_counts_epochs(tmp_path) -> None:
    result = train(request(tmp_path, steps=6, decay_epochs=1), db=f"sqlite:///{tmp_path / 's.db'}")
    rates = [row["lr"] for row in _log(result.out) if row["event"] == "step"]
    # ×0.1 after every 2-step epoch: ≤ 2 float64 products, within float32_relative(2·2, eps=EPS64) of the decimals
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=float32_relative(2 * 2, eps=EPS64))
    group = torch.load(result.out / "last.pt", map_location="cpu", weights_only=False)["optimizer"]["param_groups"][0]
    assert (group["momentum"], group["nesterov"]) == (0.9, False)  # the official SGD, not timm's Nesterov "sgd"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"freeze": "none"}, "--ca-stream trains the stream alone"),
        ({"gc_consistency": 25.0}, "--gc-consistency"),
        ({"maxpool": True}, "--maxpool"),
        ({"model": ModelRequest("test_resnet", pretrained=False), "freeze": "all-but-stream"}, "add --ca-stream"),
    ],
)
def test_options_that_do_not_apply_are_refused(tmp_path, options, message) -> None:
    with pytest.raises(TrainingError, match=message):
        request(tmp_path, **options).validate()


def test_cli_train_ca_stream_refuses_in_one_line(tmp_path) -> None:
    args = [
        "train",
        "test_resnet",
        "--no-pretrained",
        "--ca-stream",
        "--freeze",
        "none",
        "--data",
        "sample",
        "--out",
        str(tmp_path / "run"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--ca-stream trains the stream alone" in lines[0]


def test_compare_against_parent_pairs_the_stream_with_the_pooled_model(trained, tmp_path) -> None:
    """Scored both ways, the trained stream is compared with its parent (GAP); neither it nor a stream
    loaded from a file (no lineage) is ever taken for the architecture's baseline."""
    from alignbench.analysis.compare import compare
    from alignbench.models import save_stream
    from alignbench.scoring import ScoreRequest, score, trained_request

    result, db, _ = trained
    options = dict(explainer="gradcam", dataset="sample", limit=4, batch_size=4, workers=0, device="cpu")
    parent = score(ScoreRequest(model=ModelRequest("test_resnet", pretrained=False), **options), db=db)
    child = score(ScoreRequest(model=trained_request(result.tag, db), **options), db=db)
    save_stream(load_model(STREAM), tmp_path / "fresh.safetensors")
    loose = score(
        ScoreRequest(
            model=ModelRequest("test_resnet", pretrained=False, ca_stream=True, stream_checkpoint=tmp_path / "fresh.safetensors"), **options
        ),
        db=db,
    )
    [row] = compare(db, against="parent", dataset="sample").comparisons
    assert (row.kind, row.baseline_run_id, row.dcls_run_id, row.variant) == ("against-parent", parent.run_id, child.run_id, result.tag)
    assert "test_resnet + CA-Stream" in row.dcls_label
    for pairing in compare(db, dataset="sample").comparisons:
        assert {pairing.baseline_run_id, pairing.dcls_run_id}.isdisjoint({child.run_id, loose.run_id})

"""MoCo v3 checkpoints (facebookresearch/moco-v3) load onto timm's resnet / ViT models.

Every checkpoint here is built by renaming a timm model's keys the other way, into the layout the
MoCo v3 scripts write (main_lincls.py, main_moco.py with moco/builder.py, convert_to_deit.py), so the
right answer is known: the logits of the source model.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.errors import ModelError
from alignbench.models import load_model, model_identity
from alignbench.models._checkpoint import detect_origin, moco_v3_position_embedding

SNAKE = "ILSVRC2012_val_00009492.JPEG"
VIT, RESNET = "test_vit", "resnet18"  # tiny timm ViT (6 blocks, 160 px); the smallest torchvision-named resnet
CLASSIFIER = {VIT: "head", RESNET: "fc"}  # main_lincls.py's linear_keyword per architecture
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _source(name: str) -> nn.Module:
    """A timm model with seeded weights (BN statistics too), in eval mode; ViTs carry MoCo v3's fixed
    sin-cos position embedding, as every MoCo v3 ViT checkpoint does."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.add_(0.02 * torch.randn(value.shape, generator=generator))
            if key.endswith("running_var"):
                value.abs_().add_(0.5)
        if hasattr(model, "pos_embed"):
            model.pos_embed.copy_(moco_v3_position_embedding(model.patch_embed.grid_size, model.embed_dim))
    return model


def _mlp(num_layers: int, input_dim: int, mlp_dim: int, output_dim: int, last_bn: bool = True) -> nn.Sequential:
    """moco/builder.py MoCo._build_mlp, transcribed: the projector and predictor whose keys a
    pre-training checkpoint holds."""
    layers: list[nn.Module] = []
    for index in range(num_layers):
        dim1 = input_dim if index == 0 else mlp_dim
        dim2 = output_dim if index == num_layers - 1 else mlp_dim
        layers.append(nn.Linear(dim1, dim2, bias=False))
        if index < num_layers - 1:
            layers += [nn.BatchNorm1d(dim2), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*layers)


def lincls_checkpoint(state: dict) -> dict:
    """main_lincls.py save_checkpoint: the DDP-wrapped classifier under state_dict, keys 'module.<key>'."""
    return {
        "epoch": 90,
        "arch": "moco",
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "best_acc1": 0.0,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
    }


def pretraining_checkpoint(state: dict, classifier: str) -> dict:
    """main_moco.py save_checkpoint of the DDP-wrapped MoCo module (moco/builder.py): base_encoder with
    the projection MLP in its classifier slot (MoCo_ResNet: fc, 2 layers; MoCo_ViT: head, 3 layers), a
    momentum encoder with other weights, and the predictor. dim=8, mlp_dim=16 stand for 256 and 4096."""
    width = state[f"{classifier}.weight"].shape[1]
    layers = 3 if classifier == "head" else 2
    torch.manual_seed(2)
    projector, momentum_projector = _mlp(layers, width, 16, 8), _mlp(layers, width, 16, 8)
    predictor = _mlp(2, 8, 16, 8, last_bn=classifier == "head")
    backbone = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    moco = {f"base_encoder.{k}": v for k, v in backbone.items()}
    moco |= {f"base_encoder.{classifier}.{k}": v for k, v in projector.state_dict().items()}
    # the momentum encoder is an EMA of the base encoder: close, but not the weights to load
    moco |= {f"momentum_encoder.{k}": v + 0.5 if v.is_floating_point() else v for k, v in backbone.items()}
    moco |= {f"momentum_encoder.{classifier}.{k}": v for k, v in momentum_projector.state_dict().items()}
    moco |= {f"predictor.{k}": v for k, v in predictor.state_dict().items()}
    return {
        "epoch": 300,
        "arch": "moco",
        "state_dict": {f"module.{k}": v for k, v in moco.items()},
        "optimizer": {"state": {}, "param_groups": []},
        "scaler": {"scale": 65536.0, "_growth_tracker": 0},
    }


def deit_checkpoint(state: dict, classifier: str = "head") -> dict:
    """convert_to_deit.py: base_encoder without its head, prefix removed, under 'model'."""
    return {"model": {k: v for k, v in state.items() if not k.startswith(classifier + ".")}}


def _logits(model: nn.Module, name: str) -> torch.Tensor:
    size = 160 if name == VIT else 64
    with torch.no_grad():
        return model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3)))


def _save(tmp_path: Path, filename: str, obj: dict) -> Path:
    path = tmp_path / filename
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module", params=[VIT, RESNET])
def source(request):
    return request.param, _source(request.param)


def test_linear_classification_checkpoint_loads_to_the_same_logits(source, tmp_path):
    name, model = source
    path = _save(tmp_path, "linear.pth.tar", lincls_checkpoint(model.state_dict()))
    loaded = load_model(name, checkpoint=path, device="cpu")
    torch.testing.assert_close(_logits(loaded, name), _logits(model, name), rtol=0, atol=0)
    # a MoCo v3 ViT shows its origin (the frozen sin-cos position embedding); a resnet's keys cannot
    assert loaded.alignbench_info.identity.origin == ("moco-v3" if name == VIT else None)


def test_pretraining_checkpoint_keeps_only_the_base_encoder_and_takes_a_head(source, tmp_path):
    name, model = source
    classifier = CLASSIFIER[name]
    state = model.state_dict()
    path = _save(tmp_path, "pretrain.pth.tar", pretraining_checkpoint(state, classifier))
    probe = _save(tmp_path, "linear.pth.tar", lincls_checkpoint(state))
    plain = _save(tmp_path, "head.pth", {"weight": state[f"{classifier}.weight"], "bias": state[f"{classifier}.bias"]})
    expected = _logits(model, name)
    for head in (probe, plain):
        loaded = load_model(name, checkpoint=path, head=head, device="cpu")
        torch.testing.assert_close(_logits(loaded, name), expected, rtol=0, atol=0)
        assert loaded.alignbench_info.identity.origin == "moco-v3"  # the layout says so
        assert f"linear head {head}" in loaded.alignbench_info.identity.weights_source


def test_pretraining_checkpoint_without_a_head_is_refused(source, tmp_path):
    name, model = source
    path = _save(tmp_path, "pretrain.pth.tar", pretraining_checkpoint(model.state_dict(), CLASSIFIER[name]))
    with pytest.raises(
        ModelError,
        match=r"is a MoCo v3 pre-training checkpoint: its projection head \((fc|head)\.\*\) is not a classifier; pass --head PATH",
    ):
        load_model(name, checkpoint=path, device="cpu")


def test_deit_format_checkpoints_load_with_or_without_their_head(tmp_path):
    model = _source(VIT)
    state = model.state_dict()
    expected = _logits(model, VIT)
    whole = _save(tmp_path, "deit.pth", {"model": dict(state)})  # a DeiT-trained classifier keeps its head
    torch.testing.assert_close(_logits(load_model(VIT, checkpoint=whole, device="cpu"), VIT), expected, rtol=0, atol=0)
    encoder = _save(tmp_path, "converted.pth", deit_checkpoint(state))  # convert_to_deit.py output
    with pytest.raises(ModelError, match=r"is an encoder without a classifier \(no head\.\* keys\); pass --head PATH"):
        load_model(VIT, checkpoint=encoder, device="cpu")
    head = _save(tmp_path, "head.pth", {"weight": state["head.weight"], "bias": state["head.bias"]})
    loaded = load_model(VIT, checkpoint=encoder, head=head, device="cpu")
    torch.testing.assert_close(_logits(loaded, VIT), expected, rtol=0, atol=0)
    assert loaded.alignbench_info.identity.origin == "moco-v3"


def test_moco_key_names_are_timms_for_the_thesis_architectures():
    """The layouts above hold for the real architectures: torchvision's resnet50 names (MoCo's ResNets)
    are timm's, and MoCo's vit_small / vit_base (moco-v3 vits.py on timm's VisionTransformer: patch 16,
    depth 12, 12 heads, qkv bias, no pre-logits layer) have exactly the keys and shapes of timm's."""
    import torchvision

    with torch.device("meta"):
        timm_resnet = timm.create_model("resnet50").state_dict()
        torchvision_resnet = torchvision.models.resnet50().state_dict()
        assert {k: v.shape for k, v in timm_resnet.items()} == {k: v.shape for k, v in torchvision_resnet.items()}
        for name, dim in (("vit_small_patch16_224", 384), ("vit_base_patch16_224", 768)):
            block = {
                "norm1.weight": (dim,),
                "norm1.bias": (dim,),
                "attn.qkv.weight": (3 * dim, dim),
                "attn.qkv.bias": (3 * dim,),
                "attn.proj.weight": (dim, dim),
                "attn.proj.bias": (dim,),
                "norm2.weight": (dim,),
                "norm2.bias": (dim,),
                "mlp.fc1.weight": (4 * dim, dim),
                "mlp.fc1.bias": (4 * dim,),
                "mlp.fc2.weight": (dim, 4 * dim),
                "mlp.fc2.bias": (dim,),
            }
            moco = {
                "cls_token": (1, 1, dim),
                "pos_embed": (1, 197, dim),
                "patch_embed.proj.weight": (dim, 3, 16, 16),
                "patch_embed.proj.bias": (dim,),
                "norm.weight": (dim,),
                "norm.bias": (dim,),
                "head.weight": (1000, dim),
                "head.bias": (1000,),
            }
            moco |= {f"blocks.{i}.{key}": shape for i in range(12) for key, shape in block.items()}
            vit = timm.create_model(name)
            assert {k: tuple(v.shape) for k, v in vit.state_dict().items()} == moco
            assert vit.blocks[0].norm1.eps == 1e-6  # vits.py: partial(nn.LayerNorm, eps=1e-6)


def test_moco_v3_weights_get_moco_v3s_eval_transform(tmp_path):
    """Detected or declared, a MoCo v3 origin means main_lincls.py's transform: ImageNet mean/std,
    Resize(256) bilinear + CenterCrop(224) — not timm's ViT tag (mean = std = 0.5) nor resnet50.a1's crop."""
    model = _source(VIT)
    loaded = load_model(VIT, checkpoint=_save(tmp_path, "linear.pth.tar", lincls_checkpoint(model.state_dict())), device="cpu")
    preprocessing = loaded.alignbench_info.preprocessing
    assert (preprocessing.mean, preprocessing.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert (preprocessing.interpolation, preprocessing.crop_pct, preprocessing.input_size) == ("bilinear", 0.875, (160, 160))

    torch.manual_seed(0)
    resnet50 = timm.create_model("resnet50", pretrained=False).eval()
    path = _save(tmp_path, "r50.pth.tar", lincls_checkpoint(resnet50.state_dict()))
    plain = load_model("resnet50", checkpoint=path, device="cpu")
    assert plain.alignbench_info.identity.origin is None and plain.alignbench_info.preprocessing.crop_pct == 0.95
    declared = load_model("resnet50", checkpoint=path, tag="moco-v3", device="cpu")
    assert declared.alignbench_info.identity.origin == "moco-v3"
    assert (declared.alignbench_info.preprocessing.interpolation, declared.alignbench_info.preprocessing.crop_pct) == ("bilinear", 0.875)
    torch.testing.assert_close(_logits(declared, RESNET), _logits(resnet50, RESNET), rtol=0, atol=0)


def test_origin_detection_reads_the_layout_not_the_file_name():
    model = _source(VIT)
    state = model.state_dict()
    assert detect_origin(state) == "moco-v3"
    assert detect_origin({**state, "pos_embed": state["pos_embed"] + 1e-3}) is None  # a learnt embedding
    assert detect_origin(timm.create_model(RESNET, pretrained=False).state_dict()) is None


def test_head_and_declared_origin_are_part_of_the_fingerprint_and_the_tag_alone_is_not(tmp_path):
    model = _source(VIT)
    state = model.state_dict()
    path = _save(tmp_path, "pretrain.pth.tar", pretraining_checkpoint(state, "head"))
    head = _save(tmp_path, "head.pth", {"weight": state["head.weight"], "bias": state["head.bias"]})
    other = _save(tmp_path, "other.pth", {"weight": state["head.weight"] * 2, "bias": state["head.bias"]})
    plain = model_identity(VIT, checkpoint=path)
    with_head = model_identity(VIT, checkpoint=path, head=head)
    assert len({plain.fingerprint, with_head.fingerprint, model_identity(VIT, checkpoint=path, head=other).fingerprint}) == 3
    assert model_identity(VIT, checkpoint=path, head=head, tag="mine").fingerprint == with_head.fingerprint
    declared = model_identity(VIT, checkpoint=path, head=head, tag="moco-v3")
    assert declared.fingerprint != with_head.fingerprint and declared.origin == "moco-v3"
    assert model_identity(VIT, head=None).fingerprint == model_identity(VIT).fingerprint
    assert with_head.request["head"] == str(head.resolve())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"head": "HEAD"}, "--head is the linear classifier of a --checkpoint encoder"),
        ({"checkpoint": "CKPT", "head": "missing.pth"}, "--head missing.pth does not exist"),
    ],
)
def test_a_head_without_an_encoder_or_file_is_refused(tmp_path, options, message):
    ckpt = _save(tmp_path, "c.pth", {"w": torch.zeros(1)})
    head = _save(tmp_path, "h.pth", {"weight": torch.zeros(2, 2), "bias": torch.zeros(2)})
    resolved = {k: {"HEAD": head, "CKPT": ckpt}.get(v, v) for k, v in options.items()}
    with pytest.raises(ModelError, match=message):
        model_identity(VIT, **resolved)


def test_a_head_file_without_a_linear_classifier_is_refused(tmp_path):
    model = _source(VIT)
    path = _save(tmp_path, "pretrain.pth.tar", pretraining_checkpoint(model.state_dict(), "head"))
    head = _save(tmp_path, "head.pth", {"fc.weight": torch.zeros(10, 64)})
    with pytest.raises(ModelError, match=r"--head .*head.pth holds no linear classifier"):
        load_model(VIT, checkpoint=path, head=head, device="cpu")


def test_a_head_for_a_model_without_a_classifier_slot_is_refused(tmp_path):
    from alignbench.models._checkpoint import load_checkpoint

    bare = nn.Linear(4, 2)  # no timm pretrained_cfg naming a classifier
    head = _save(tmp_path, "head.pth", {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)})
    with pytest.raises(ModelError, match="--head: bare names no classifier module"):
        load_checkpoint(bare, dict(bare.state_dict()), "bare", source=tmp_path / "c.pth", head=head)


# ------------------------------------------------------------------------------------------- CLI


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_refuses_a_pretraining_checkpoint_without_head(tmp_path, shared_data):
    model = _source(VIT)
    path = _save(tmp_path, "pretrain.pth.tar", pretraining_checkpoint(model.state_dict(), "head"))
    image = shared_data / "imagenet-val-10" / SNAKE
    for args in (["explain", VIT, str(image), "--out", str(tmp_path / "maps")], ["score", VIT, "--db", f"sqlite:///{tmp_path / 's.db'}"]):
        line = _one_line_error(CliRunner().invoke(app, [*args, "--checkpoint", str(path), "--explainer", "rollout"]))
        assert "is a MoCo v3 pre-training checkpoint" in line and "pass --head PATH" in line
    assert not (tmp_path / "s.db").exists()  # a refused model: no store is created, nothing stored


def test_cli_names_the_first_mismatching_keys_of_a_checkpoint_for_another_architecture(tmp_path, shared_data):
    resnet = _source(RESNET)
    path = _save(tmp_path, "pretrain.pth.tar", pretraining_checkpoint(resnet.state_dict(), "fc"))
    image = shared_data / "imagenet-val-10" / SNAKE
    result = CliRunner().invoke(
        app, ["explain", VIT, str(image), "--out", str(tmp_path), "--checkpoint", str(path), "--explainer", "rollout"]
    )
    line = _one_line_error(result)
    assert "checkpoint does not fit test_vit (dense): missing: cls_token, pos_embed, patch_embed.proj.weight" in line
    assert "unexpected: conv1.weight, bn1.weight, bn1.bias" in line and "moco-v3 checkpoint of another architecture?" in line


def test_score_records_origin_head_and_tag_in_the_store(tmp_path):
    model = _source(VIT)
    state = model.state_dict()
    path = _save(tmp_path, "pretrain.pth.tar", pretraining_checkpoint(state, "head"))
    head = _save(tmp_path, "linear.pth.tar", lincls_checkpoint(state))
    db = tmp_path / "s.db"
    args = [
        "score",
        VIT,
        "--checkpoint",
        str(path),
        "--head",
        str(head),
        "--tag",
        "vit-moco",
        "--explainer",
        "raw-attention",
        "--layer",
        "2",
        "--limit",
        "2",
        "--workers",
        "0",
        "--db",
        f"sqlite:///{db}",
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    row = sqlite3.connect(db).execute("SELECT tag, origin, weights_source, request FROM model WHERE name = ?", (VIT,)).fetchone()
    assert row[:2] == ("vit-moco", "moco-v3")
    assert "linear head" in row[2] and str(head.resolve()) in row[3]
    params = sqlite3.connect(db).execute("SELECT params FROM explainer_setting WHERE method = 'raw-attention'").fetchone()
    assert params == ('{"head_fusion":"mean","layer":2}',)


def test_convert_takes_an_encoder_and_its_head_and_writes_one_whole_checkpoint(tmp_path):
    """--head is generic (any classifier slot, here ConvNeXt's head.fc) and survives a DCLS conversion:
    the written file holds the head too, so it loads alone."""
    from alignbench.models import convert_model

    torch.manual_seed(0)
    convnext = timm.create_model("test_convnext", pretrained=False).eval()
    state = convnext.state_dict()
    encoder = _save(tmp_path, "encoder.pth", {k: v for k, v in state.items() if not k.startswith("head.fc.")})
    head = _save(tmp_path, "head.pth", {"weight": state["head.fc.weight"], "bias": state["head.fc.bias"]})
    out = tmp_path / "dcls.safetensors"
    result = convert_model("test_convnext", checkpoint=encoder, head=head, init="from-dense", out=out)
    assert result.identity.request["head"] is None and "linear head" in result.source
    from safetensors.torch import load_file

    written = load_file(str(out))
    assert torch.equal(written["head.fc.weight"], state["head.fc.weight"]) and torch.equal(written["head.fc.bias"], state["head.fc.bias"])
    converted = load_model("test_convnext", dcls=True, checkpoint=out, device="cpu")  # alone: no --head needed
    assert converted.alignbench_info.identity.fingerprint == result.identity.fingerprint

"""CA-Stream as a model variant: the block against its formula and the official code, where the
stream attaches, the classifier reading the token, loading and checkpoints, the store, explainers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM
from torch import nn
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.errors import ExplainerError, ModelError
from alignbench.explainers import explain, explain_batch
from alignbench.explainers._explain import upsample
from alignbench.explainers._gradient import gradcam
from alignbench.explainers._split import gradient_evidence
from alignbench.models import CAStreamModel, load_model, model_identity, save_stream
from alignbench.models._ca_stream import CAStream, CrossAttentionBlock, attachment_plan
from alignbench.testing.cams import assert_matches_library, library_cam
from alignbench.testing.tolerance import EPS, float32_bound, float32_relative

SIZE = 64
SAMPLE = Path(__file__).resolve().parents[2] / "alignbench" / "data" / "sample"
IMAGE = SAMPLE / "ILSVRC2012_val_00009492.JPEG"


def minmax(maps: np.ndarray) -> np.ndarray:
    """Per-image min-max as pytorch-grad-cam does it (a constant map becomes 0)."""
    low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    return np.where(high > low, (maps - low) / np.where(high > low, high - low, 1), 0.0)


def stream_model(name: str = "test_resnet", **options) -> CAStreamModel:
    return load_model(name, pretrained=False, ca_stream=True, **options)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------ the block: formula and official code


def formula(features: torch.Tensor, token: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """The issue's formula, element by element in float64: logits = qᵀF/√C, softmax over HW,
    out = attention·Fᵀ, token = proj(out)."""
    f, q = features.double(), token.double()
    b, c, h, w = f.shape
    flat = f.reshape(b, c, h * w)
    logits = torch.zeros(b, h * w, dtype=torch.float64)
    out = torch.zeros(b, c, dtype=torch.float64)
    for i in range(b):
        for n in range(h * w):
            logits[i, n] = sum(q[i, k] * flat[i, k, n] for k in range(c)) / math.sqrt(c)
        e = torch.exp(logits[i] - logits[i].max())
        attention = e / e.sum()
        for k in range(c):
            out[i, k] = sum(attention[n] * flat[i, k, n] for n in range(h * w))
    new_token = out @ weight.double().T + bias.double()
    return logits.reshape(b, 1, h, w), new_token


class OfficialCLSAttention(nn.Module):
    """ftorres11/CA_Stream models/transformer.py CLS_Attention with heads=1, project_out=True,
    dropout 0; the einops rearranges spelled out for one head."""

    def __init__(self, dim: int, dim_head: int) -> None:
        super().__init__()
        self.heads = 1
        self.scale = dim_head**-0.5
        self.to_out = nn.Sequential(nn.Flatten(1, -1), nn.Linear(dim_head, dim))

    def forward(self, feats, qcls):
        b, c, w, h = feats.shape
        feats = feats.view(b, c, w * h)
        qcls = qcls.view(b, 1, c).reshape(b, 1, 1, c)  # 'b n (h d) -> b h n d'
        feats = feats.reshape(b, 1, c, w * h).transpose(-1, -2)  # 'b (h d) n -> b h n d'
        dots = torch.matmul(qcls, feats.transpose(-1, -2)) * self.scale
        attn = dots.softmax(dim=-1)
        out = torch.matmul(attn, feats).reshape(b, 1, c)  # 'b h n d -> b n (h d)'
        return dots.view(b, self.heads, w, h), self.to_out(out)


def test_block_equals_the_formula_and_the_official_cls_attention() -> None:
    torch.manual_seed(0)
    block = CrossAttentionBlock(5, 7)
    features, token = torch.randn(2, 5, 3, 4), torch.randn(2, 5)
    logits, new_token = block(features, token)
    assert logits.shape == (2, 1, 3, 4) and new_token.shape == (2, 7)
    expected_logits, expected_token = formula(features, token, block.proj.weight.detach(), block.proj.bias.detach())
    # float32 block vs float64 formula: a logit is a 5-term dot product; out a 12-term convex
    # combination of F (softmax weights off by ≤ 2Δ relative, plus exp, sum and division);
    # the token a 5-term product with proj's weight, plus the bias.
    f, w = features.double(), block.proj.weight.detach().double()
    delta = float32_bound(5, float((token.double()[:, :, None] * f.flatten(2)).abs().sum(1).max()) / math.sqrt(5))
    out_error = float32_bound(12, float(f.abs().max())) + float(f.abs().max()) * (2 * delta + float32_relative(15))
    token_error = float(w.abs().sum(1).max()) * out_error + float32_bound(
        6, float(w.abs().sum(1).max() * f.abs().max() + block.proj.bias.detach().abs().max())
    )
    torch.testing.assert_close(logits.double(), expected_logits, rtol=0, atol=delta)
    torch.testing.assert_close(new_token.double(), expected_token, rtol=0, atol=token_error)

    official = OfficialCLSAttention(dim=7, dim_head=5)
    official.to_out[1].load_state_dict(block.proj.state_dict())
    dots, out = official(features, token)
    # two float32 evaluations, each within its bound of the float64 formula: within twice it of each other
    torch.testing.assert_close(logits, dots, rtol=0, atol=2 * delta)
    torch.testing.assert_close(new_token, out, rtol=0, atol=2 * token_error)


def test_stream_initialisation_as_the_official_code() -> None:
    torch.manual_seed(0)
    stream = CAStream((4096, 64, 32), out_features=16)
    token = stream.cls_token.detach()
    assert token.shape == (1, 1, 4096)
    # N(1, 1): 4096 draws, standard errors 1/64 (mean) and 1/√8192 (std): 0.06 is ≥ 3.8 of them (seeded)
    assert abs(token.mean().item() - 1) < 0.06 and abs(token.std().item() - 1) < 0.06
    assert [tuple(b.proj.weight.shape) for b in stream.blocks] == [(64, 4096), (32, 64), (16, 32)]
    for block in stream.blocks:  # xavier-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
        bound = math.sqrt(6 / sum(block.proj.weight.shape))
        weight = block.proj.weight.detach().abs()
        assert weight.max() <= bound and weight.max() > 0.9 * bound
    assert not any(isinstance(m, (nn.LayerNorm, nn.Dropout)) for m in stream.modules())


# ------------------------------------------------------------------ where it attaches


def meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False)


@pytest.mark.parametrize(
    "name, channels, after_forward_features",
    [
        # after the stem's max-pool (64), then layer1-layer4
        ("resnet50", (64, 256, 512, 1024, 2048), False),
        # after the stem, then every stage: stage 3 (384) too, which the official ConvNeXt stream drops
        ("convnext_tiny", (96, 96, 192, 384, 768), False),
        # after the stem, all seven block stages, and conv_head+bn2 (as the official EfficientNet stream)
        ("tf_efficientnet_lite0", (32, 16, 24, 40, 80, 112, 192, 320, 1280), True),
    ],
)
def test_attachment_points_after_the_stem_and_every_stage(name, channels, after_forward_features) -> None:
    plan = attachment_plan(meta(name), name)
    assert plan.channels == channels and plan.after_forward_features is after_forward_features
    assert plan.out_features == meta(name).num_features  # the last block maps to the classifier's input


def test_stream_shape_on_a_loaded_model() -> None:
    model = stream_model()
    assert isinstance(model.ca_stream.blocks, nn.ModuleList) and model.ca_stream.cls_token.shape == (1, 1, 32)
    widths = [(b.proj.in_features, b.proj.out_features) for b in model.ca_stream.blocks]
    assert widths == [(32, 32), (32, 48), (48, 192), (192, 96), (96, 96)]
    assert not any(p.requires_grad for p in model.backbone.parameters())
    x = torch.randn(2, 3, SIZE, SIZE)
    logits, attention = model.forward_with_attention(x)
    assert logits.shape == (2, 1000)
    assert [tuple(a.shape) for a in attention] == [(2, 1, 16, 16), (2, 1, 16, 16), (2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]


def test_the_classifier_receives_the_token_not_the_pooled_features(images) -> None:
    model = stream_model()
    seen = []
    handle = model.backbone.fc.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        with torch.no_grad():
            logits = model(images)
            _, token = model.ca_stream(model.stream_features(images))
            pooled = model.backbone.forward_features(images).mean((2, 3))
    finally:
        handle.remove()
    assert torch.equal(seen[0], token)
    assert not torch.allclose(seen[0], pooled)
    torch.testing.assert_close(logits, model.backbone.fc(token), rtol=0, atol=0)  # the same fc on the same token: exact


def test_the_token_goes_through_the_models_pre_logits_norm(images) -> None:
    model = stream_model("test_convnext")  # NormMlpClassifierHead: LayerNorm2d, then fc
    seen = []
    handle = model.backbone.head.norm.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        with torch.no_grad():
            logits = model(images)
            _, token = model.ca_stream(model.stream_features(images))
    finally:
        handle.remove()
    assert torch.equal(seen[0][:, :, 0, 0], token)
    head = model.backbone.head
    torch.testing.assert_close(logits, head.fc(head.norm(token[:, :, None, None]).flatten(1)), rtol=0, atol=0)  # the same ops: exact


def test_a_vit_is_refused_naming_the_problem_and_the_models_that_work() -> None:
    with pytest.raises(ModelError, match=r"token transformer.*Models that take it: resnet50, convnext_tiny"):
        load_model("test_vit", pretrained=False, ca_stream=True)


# ------------------------------------------------------------------ identity, checkpoints, store


def test_identity_records_the_stream_and_leaves_other_fingerprints_alone(tmp_path) -> None:
    # the value main computed before CA-Stream existed: models without a stream keep their identity
    assert model_identity("test_resnet", pretrained=False).fingerprint == (
        "88fac0b6a17c2b2d91d151a4d7a6811b114f2e429b310380c0549b9f26b8f293"
    )
    fresh = model_identity("test_resnet", pretrained=False, ca_stream=True)
    assert fresh.ca_stream and "CA-Stream fresh" in fresh.weights_source
    path = tmp_path / "stream.safetensors"
    save_stream(stream_model(), path)
    trained = model_identity("test_resnet", pretrained=False, ca_stream=True, stream_checkpoint=path)
    assert len({fresh.fingerprint, trained.fingerprint, model_identity("test_resnet", pretrained=False).fingerprint}) == 3
    assert trained.request["stream_checkpoint"] == str(path.resolve())
    with pytest.raises(ModelError, match="a stream checkpoint needs the CA-Stream"):
        model_identity("test_resnet", pretrained=False, stream_checkpoint=path)


def test_stream_checkpoint_round_trip_holds_only_the_stream(tmp_path, images) -> None:
    model = stream_model()
    with torch.no_grad():
        for p in model.ca_stream.parameters():
            p.add_(0.5)  # not the seeded init any more
    path = tmp_path / "stream.safetensors"
    save_stream(model, path)
    from safetensors.torch import load_file

    assert set(load_file(str(path))) == set(model.ca_stream.state_dict())
    again = stream_model(stream_checkpoint=path)
    # the same weights through the same forward on the same images: exact
    torch.testing.assert_close(again(images), model(images), rtol=0, atol=0)
    torch.save(model.ca_stream.state_dict(), tmp_path / "stream.pt")  # a torch file loads too
    torch.testing.assert_close(stream_model(stream_checkpoint=tmp_path / "stream.pt")(images), model(images), rtol=0, atol=0)


def test_a_stream_for_another_architecture_is_refused_listing_the_mismatches(tmp_path) -> None:
    path = tmp_path / "resnet_stream.safetensors"
    save_stream(stream_model("test_resnet"), path)
    with pytest.raises(ModelError) as error:  # the file names its architecture: refused before its shapes are read
        stream_model("test_convnext", stream_checkpoint=path)
    assert "\n" not in error.value.message
    assert f"{path} is a CA-Stream trained on test_resnet, not test_convnext" in error.value.message
    bare = tmp_path / "resnet_stream.pt"  # a torch file names nothing: its shapes tell
    torch.save(stream_model("test_resnet").ca_stream.state_dict(), bare)
    with pytest.raises(ModelError) as error:
        stream_model("test_convnext", stream_checkpoint=bare)
    message = error.value.message
    assert "\n" not in message
    assert "checkpoint does not fit the CA-Stream of test_convnext" in message
    assert "shape: cls_token (1, 1, 32) vs (1, 1, 24)" in message


def test_a_stream_given_as_the_backbone_checkpoint_says_where_it_goes(tmp_path) -> None:
    path = tmp_path / "stream.safetensors"
    save_stream(stream_model(), path)
    with pytest.raises(ModelError, match="holds a CA-Stream.*--ca-stream --checkpoint"):
        load_model("test_resnet", checkpoint=path)


def test_checkpoint_with_ca_stream_is_the_streams_in_python_as_in_the_cli(tmp_path, images) -> None:
    from alignbench.models import ModelRequest
    from alignbench.models._load import save_state_dict

    trained = stream_model()
    with torch.no_grad():
        for p in trained.ca_stream.parameters():
            p.add_(0.5)
    stream, backbone = tmp_path / "stream.safetensors", tmp_path / "backbone.safetensors"
    save_stream(trained, stream)
    save_state_dict(load_model("test_resnet", pretrained=False), backbone)
    # --ca-stream --checkpoint S [--backbone-checkpoint B]: the request stores each file by what it holds
    request = ModelRequest.of("test_resnet", pretrained=False, ca_stream=True, checkpoint=stream, backbone_checkpoint=backbone)
    assert request == ModelRequest("test_resnet", pretrained=False, ca_stream=True, checkpoint=backbone, stream_checkpoint=stream)
    # the same weights through the same forward on the same images: exact
    torch.testing.assert_close(stream_model(checkpoint=stream)(images), trained(images), rtol=0, atol=0)
    torch.testing.assert_close(stream_model(checkpoint=stream, backbone_checkpoint=backbone)(images), trained(images), rtol=0, atol=0)
    assert model_identity("test_resnet", pretrained=False, ca_stream=True, checkpoint=stream) == model_identity(
        "test_resnet", pretrained=False, ca_stream=True, stream_checkpoint=stream
    )
    with pytest.raises(ModelError, match="give them once"):
        ModelRequest.of("test_resnet", ca_stream=True, checkpoint=stream, stream_checkpoint=stream)
    with pytest.raises(ModelError, match="needs ca_stream=True"):
        ModelRequest.of("test_resnet", backbone_checkpoint=backbone)


def test_a_dcls_backbone_takes_a_stream(images) -> None:
    model = stream_model("test_convnext", dcls=True, init="from-dense")
    assert model.alignbench_info.identity.dcls and model.alignbench_info.name == "test_convnext + DCLS + CA-Stream"
    assert explain(model, images[:1], method="gradcam").shape == (1, SIZE, SIZE)


def test_the_store_records_a_stream_model(tmp_path) -> None:
    from alignbench.store import open_store
    from alignbench.store.queries import upsert_model

    model = stream_model()
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store, store.session(write=True) as session:
        row = upsert_model(session, model.alignbench_info.identity, param_count=model.alignbench_info.param_count)
        session.commit()
        # origin and lineage come from training (tests/training/test_ca_stream_training.py): a stream loaded from
        # a file (or fresh) is no trained model of the store's until `alignbench train` records one
        assert (row.ca_stream, row.origin) == (True, None)
        assert row.param_count == sum(p.numel() for p in model.parameters())
        assert '"ca_stream":true' in row.request


# ------------------------------------------------------------------ explainers


@pytest.mark.parametrize("method", ["gradcam", "threshold-gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigengradcam"])
def test_every_gradient_weighted_explainer_runs_on_a_stream_model(method, images) -> None:
    model = stream_model()
    result = explain_batch(model, images, [1, 2, 3], method=method)
    assert result.maps.shape == (3, SIZE, SIZE) and torch.isfinite(result.maps).all()
    torch.testing.assert_close(result.logits, model(images), rtol=0, atol=0)  # the explainer's forward is the model's: exact
    assert all(p.grad is None for p in model.parameters())


def test_gradients_flow_from_the_token_through_the_last_block_into_a(images) -> None:
    """The split (earlier stream blocks without autograd, A a leaf) gives the same dy/dA as the
    unsplit stream differentiated end to end."""
    model = stream_model("test_efficientnet")
    evidence = gradient_evidence(model, images, torch.tensor([3, 1, 4]))
    features = model.stream_features(images)
    a = features[-1].detach().requires_grad_(True)
    with torch.enable_grad():
        _, token = model.ca_stream([*features[:-1], a])
        logits = model.classify(token)
        (grad,) = torch.autograd.grad(logits[torch.arange(3), torch.tensor([3, 1, 4])].sum(), a)
    # the same forward and the same backward through the stream's last block and the head: exact
    torch.testing.assert_close(evidence.gradients, grad, rtol=0, atol=0)
    torch.testing.assert_close(evidence.activations, model.backbone.forward_features(images), rtol=0, atol=0)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name, layer", [("test_resnet", lambda m: m.backbone.layer4), ("test_efficientnet", lambda m: m.backbone.bn2)])
def test_gradcam_equals_pytorch_grad_cam_on_the_whole_stream_model(name, layer, images) -> None:
    model = stream_model(name)
    targets = [1, 4, 7]
    ours = explain(model, images, targets, "gradcam")
    evidence = gradient_evidence(model, images, torch.tensor(targets))
    model.backbone.requires_grad_(True)  # the library hooks A's gradient, which needs a graph to A
    try:
        theirs = library_cam(GradCAM, model, layer(model), images, targets)
    finally:
        model.backbone.requires_grad_(False)
    # raw maps within float32_bound(C + HW + 8, Σ|w·A|) for every image (ours is the channel mean: ×C),
    # min-max'd maps within their derived bound where it is meaningful (was atol=2e-5, tuned)
    assert_matches_library(gradcam(evidence), ours, theirs, evidence, raw_scale=evidence.activations.shape[1])


def test_ca_attention_is_the_last_blocks_softmax_upsampled_then_min_max(images) -> None:
    model = stream_model()
    with torch.no_grad():  # a larger token entering the last block: attention far from uniform
        model.ca_stream.blocks[-2].proj.weight.mul_(30)
    maps = explain(model, images, method="ca-attention")
    assert maps.shape == (3, SIZE, SIZE)
    features = model.stream_features(images)
    token = model.ca_stream.token_before_last(features)
    a = features[-1]
    logits, _ = formula(a, token, model.ca_stream.blocks[-1].proj.weight.detach(), model.ca_stream.blocks[-1].proj.bias.detach())
    attention = logits[:, 0].flatten(1).softmax(dim=1).view_as(logits[:, 0]).float()
    up = upsample(attention, (SIZE, SIZE))
    flat = up.flatten(1)
    low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    # The bound, per image, from the computation (float32 in the library, float64 here):
    # - a logit is a dot product of C terms scaled by 1/√C: error Δ ≤ C·EPS·Σ_c|q_c·a_c|/√C;
    # - softmax: p_n ∝ exp(l_n), so p_n moves by ≤ 2Δ relative (its own logit and the
    #   normaliser's weighted mean), plus the rounding of exp(l_n - max) (EPS/2 of the logit
    #   range), of the HW-term sum, the division and the cast;
    # - bilinear upsampling: a convex combination of 4 values, a few more roundings of p_max;
    # - min-max by the range r = high - low: the value, the low and the high each move, so
    #   the error is ≤ 4·δp/r. A near-uniform attention (small r) amplifies it the most.
    c, hw = a.shape[1], a.shape[2] * a.shape[3]
    dot_magnitude = (token.detach().double()[:, :, None] * a.detach().double().flatten(2)).abs().sum(1).amax(1) / math.sqrt(c)
    spread = (logits.amax((1, 2, 3)) - logits.amin((1, 2, 3))).detach()
    p_max, r = attention.detach().flatten(1).amax(1).double(), (high - low).detach().flatten().double()
    for i in range(len(maps)):
        softmax_relative = 2 * float32_bound(c, float(dot_magnitude[i]), margin=1) + float32_relative(hw + 3) + EPS / 2 * float(spread[i])
        atol = 4 * float(p_max[i]) * (softmax_relative + float32_relative(8)) / float(r[i]) + float32_relative(3)
        torch.testing.assert_close(maps[i], ((up - low) / (high - low))[i], atol=atol, rtol=0)
    assert torch.equal(maps, explain(model, images, targets=5, method="ca-attention"))  # class-agnostic
    assert float(maps.amin()) == 0.0 and float(maps.amax()) == 1.0


def test_ca_attention_needs_a_stream_model(images) -> None:
    with pytest.raises(ExplainerError, match="ca-attention reads a CA-Stream's attention.*--ca-stream"):
        explain(load_model("test_resnet", pretrained=False), images, method="ca-attention")


@pytest.mark.parametrize("method", ["eigencam", "scorecam", "fullgrad"])
def test_library_methods_run_on_a_stream_model(method, images) -> None:
    maps = explain(stream_model(), images[:1], method=method)
    assert maps.shape == (1, SIZE, SIZE) and torch.isfinite(maps).all()


def test_ablationcam_is_refused_on_a_stream_model(images) -> None:
    with pytest.raises(ExplainerError, match="ablationcam cannot explain"):
        explain(stream_model(), images[:1], method="ablationcam")


# ------------------------------------------------------------------ through the CLI


runner = CliRunner()


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_explain_cli_with_a_stream_checkpoint_and_ca_attention(tmp_path) -> None:
    from alignbench.models._load import save_state_dict

    stream, backbone = tmp_path / "stream.safetensors", tmp_path / "backbone.safetensors"
    save_stream(stream_model(), stream)
    save_state_dict(load_model("test_resnet", pretrained=False), backbone)  # offline: no hub weights
    out = tmp_path / "maps"
    args = [
        "explain",
        "test_resnet",
        str(IMAGE),
        "--out",
        str(out),
        "--ca-stream",
        "--checkpoint",
        str(stream),
        "--backbone-checkpoint",
        str(backbone),
        "--explainer",
        "ca-attention",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "test_resnet + CA-Stream · ca-attention" in result.stdout
    heatmap = np.load(out / f"{IMAGE.stem}.npy")
    assert heatmap.min() == 0.0 and heatmap.max() == 1.0


def test_cli_refuses_a_mismatched_stream_in_one_line(tmp_path) -> None:
    from alignbench.models._load import save_state_dict

    path, backbone = tmp_path / "stream.safetensors", tmp_path / "convnext.safetensors"
    save_stream(stream_model("test_resnet"), path)
    save_state_dict(load_model("test_convnext", pretrained=False), backbone)
    args = [
        "explain",
        "test_convnext",
        str(IMAGE),
        "--out",
        str(tmp_path / "maps"),
        "--ca-stream",
        "--checkpoint",
        str(path),
        "--backbone-checkpoint",
        str(backbone),
    ]
    line = _one_line_error(runner.invoke(app, args))
    assert "is a CA-Stream trained on test_resnet, not test_convnext" in line


def test_cli_refuses_a_stream_on_a_vit_in_one_line(tmp_path) -> None:
    args = ["explain", "test_vit", str(IMAGE), "--out", str(tmp_path / "maps"), "--ca-stream"]
    line = _one_line_error(runner.invoke(app, args))
    assert "token transformer" in line and "efficientnet_lite0" in line


def test_cli_backbone_checkpoint_needs_ca_stream(tmp_path) -> None:
    path = tmp_path / "backbone.safetensors"
    path.write_bytes(b"")
    args = ["explain", "test_resnet", str(IMAGE), "--out", str(tmp_path / "maps"), "--backbone-checkpoint", str(path)]
    assert "--backbone-checkpoint is the weights under a CA-Stream" in _one_line_error(runner.invoke(app, args))


def test_score_cli_with_a_stream_is_stored_and_cached(tmp_path) -> None:
    import json

    path = tmp_path / "stream.safetensors"
    save_stream(load_model("efficientnet_lite0", ca_stream=True), path)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    args = [
        "score",
        "efficientnet_lite0",
        "--ca-stream",
        "--checkpoint",
        str(path),
        "--explainer",
        "gradcam",
        "--limit",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--db",
        db,
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ca_stream"] is True and summary["n_images"] == 2 and summary["cached"] is False
    assert "CA-Stream" in summary["weights_source"]
    again = runner.invoke(app, args)
    assert json.loads(again.stdout)["cached"] is True


def test_models_lists_which_models_take_a_stream() -> None:
    import json

    rows = {row["name"]: row for row in json.loads(runner.invoke(app, ["models", "--json"]).stdout)}
    assert all(row["ca_stream"] for row in rows.values())
    # 64 (token) + 64·256+256 + 256·512+512 + 512·1024+1024 + 1024·2048+2048 + 2048·2048+2048
    assert rows["resnet50"]["params_ca_stream"] == 6_969_152
    table = runner.invoke(app, ["models"], env={"COLUMNS": "200"}).stdout
    assert "--ca-stream (CA-Stream) fits every model above, adding 0.48 M–6.97 M parameters" in table

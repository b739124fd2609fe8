"""Attention rollout and raw attention for ViT / DeiT."""

from __future__ import annotations

import pytest
import timm
import torch

from alignbench.errors import ExplainerError
from alignbench.explainers import explain, explain_batch
from alignbench.explainers._attention import attention_maps, attention_probabilities, rollout
from alignbench.testing.tolerance import float32_bound, float32_relative, network_relative, softmax_relative


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=10).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def timm_attention(model, images):
    """Each block's attention as timm's own unfused path computes it (attn_drop sees the softmax)."""
    seen, handles = [], []
    for block in model.blocks:
        block.attn.fused_attn = False
        handles.append(block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: seen.append(out)))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for block, handle in zip(model.blocks, handles):
            handle.remove()
            block.attn.fused_attn = True
    return seen


def attention_rtol(attn, x, path_terms: int = 0) -> float:
    """Relative bound on a block's attention probabilities computed twice in float32 from tokens x:
    a logit q·k·scale sums d products of q and k, each a (C + 1)-term qkv row, so two evaluations
    differ by ≤ float32_bound(C + d + 9, Σ_i |q_i||k_i|·scale) with |q| ≤ |x|·|W_q| + |b_q| (float64);
    ``path_terms``: the terms summed upstream when x itself comes from another forward (each stage
    well conditioned: LayerNorm keeps the tokens' scale); then softmax_relative over the N tokens."""
    w, bias = attn.qkv.weight.detach().double(), attn.qkv.bias.detach().double()
    c, heads, d = w.shape[1], attn.num_heads, attn.head_dim
    bound = (x.double().abs() @ w.abs().T + bias.abs()).reshape(*x.shape[:2], 3, heads, d).permute(2, 0, 3, 1, 4)
    magnitude = float((bound[0] @ bound[1].transpose(-2, -1)).amax()) * attn.scale
    return softmax_relative(float32_bound(c + d + 9 + path_terms, magnitude), x.shape[1])


def recorded_rtols(model, images, path: bool = False) -> list[float]:
    """attention_rtol of every block, on the tokens entering it; ``path``: x from a second forward."""
    captured = []
    handles = [b.attn.register_forward_pre_hook(lambda _m, args: captured.append(args[0])) for b in model.blocks]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    c = model.embed_dim
    per_block = c + model.blocks[0].attn.head_dim + 3 * c + model.blocks[0].mlp.fc1.out_features  # qkv, q·k, proj, fc1, fc2
    patch = model.patch_embed.proj.weight[0].numel()
    return [
        attention_rtol(b.attn, x, (patch + i * (per_block + x.shape[1])) if path else 0)
        for i, (b, x) in enumerate(zip(model.blocks, captured))
    ]


def rollout_rtol(attention_rtols: list[float], n: int) -> float:
    """All of rollout's terms are ≥ 0, so relative errors add: per layer the fused attention's
    (its heads' bound, plus the head mean), (A + I)/2, the n-term row sum, the division and the
    n-term product with the running result."""
    return sum(r + float32_relative(2 * n + 8) for r in attention_rtols)


def test_recomputed_attention_equals_timms(vit, images):
    captured = []
    handles = [b.attn.register_forward_pre_hook(lambda _m, args: captured.append(args[0])) for b in vit.blocks]
    with torch.no_grad():
        vit(images)
        ours = [attention_probabilities(b.attn, x) for b, x in zip(vit.blocks, captured)]
    for handle in handles:
        handle.remove()
    for a, b, x, block in zip(ours, timm_attention(vit, images), captured, vit.blocks):
        torch.testing.assert_close(a, b, atol=0, rtol=attention_rtol(block.attn, x))  # derived, was atol=1e-6, rtol=1e-5


def test_rollout_known_answer():
    # Ã1 = (A1 + I)/2 = [[.75, .25], [0, 1]], Ã2 = [[1, 0], [.25, .75]]; R = Ã2 Ã1
    a1 = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])
    a2 = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    expected = torch.tensor([[[0.75, 0.25], [0.1875, 0.8125]]])
    torch.testing.assert_close(rollout([a1, a2]), expected, rtol=0, atol=0)  # dyadic fractions, 2-term sums: exact in float32


def test_rollout_and_raw_attention_on_a_vit(vit, images):
    grid = vit.patch_embed.dynamic_feat_size((64, 64))  # test_vit takes any input size
    result = explain_batch(vit, images, None, "rollout")
    assert result.maps.shape == (2, 64, 64)
    assert torch.equal(result.targets, result.logits.argmax(1))
    with torch.no_grad():
        # the explainer records attention on the unfused path where vit(images) may take a fused kernel:
        # the same products in other orders, within network_relative of the largest logit
        logits = vit(images)
        torch.testing.assert_close(result.logits, logits, rtol=0, atol=network_relative(vit) * float(logits.abs().max()))
    # raw attention = the class-token row of the last block, heads averaged, upsampled
    last = timm_attention(vit, images)[-1].mean(1)[:, 0, vit.num_prefix_tokens :].reshape(2, *grid)
    expected = torch.nn.functional.interpolate(last[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    # terms ≥ 0 throughout: the last block's softmax bound, the head mean and the 4-term bilinear resize
    rtols = recorded_rtols(vit, images)
    raw_rtol = rtols[-1] + float32_relative(vit.blocks[-1].attn.num_heads + 8)
    torch.testing.assert_close(explain(vit, images, None, "raw-attention"), expected, atol=0, rtol=raw_rtol)
    # one image alone = the same image in the batch (its tokens come from another forward); no hooks left
    alone_rtol = rollout_rtol(recorded_rtols(vit, images, path=True), grid[0] * grid[1] + 1) + float32_relative(8)
    torch.testing.assert_close(explain(vit, images[1:], None, "rollout")[0], result.maps[1], atol=0, rtol=alone_rtol)
    assert sum(len(b.attn._forward_pre_hooks) for b in vit.blocks) == 0


def test_deit_distilled_skips_both_prefix_tokens(images):
    from timm.models.deit import VisionTransformerDistilled

    torch.manual_seed(0)
    deit = VisionTransformerDistilled(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=10).eval()
    assert deit.num_prefix_tokens == 2
    for method in ("rollout", "raw-attention"):
        assert explain(deit, images, None, method).shape == (2, 64, 64)


def test_attention_methods_refuse_cnns():
    cnn = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    with pytest.raises(ExplainerError, match="rollout needs a ViT/DeiT-style model.*use a CAM explainer"):
        explain(cnn, torch.randn(1, 3, 64, 64), None, "rollout")


def test_attention_with_position_terms_inside_is_refused():
    # relative-position attention adds a bias inside forward: recomputing softmax(qk^T) would be wrong
    relpos = timm.create_model("test_vit_relpos", pretrained=False, num_classes=10)
    with pytest.raises(ExplainerError, match="raw-attention needs a ViT/DeiT-style model"):
        explain(relpos, torch.randn(1, 3, 160, 160), None, "raw-attention")


# ---------------------------------------------------------------- raw attention of any layer, rollout options


def _direct_class_token_attention(model, images, layer, head_fusion):
    """Block ``layer``'s class-token attention row, straight from its weights: the tokens entering the
    block, norm1, q and k from the qkv projection, softmax(q·k^T / sqrt(d)) per head, heads fused."""
    with torch.no_grad():
        x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))
        block = model.blocks[layer]
        for earlier in model.blocks[: layer % len(model.blocks)]:
            x = earlier(x)
        h = block.norm1(x)
        b, n, c = h.shape
        heads = block.attn.num_heads
        qkv = h @ block.attn.qkv.weight.T + block.attn.qkv.bias
        q, k = qkv[..., :c], qkv[..., c : 2 * c]
        q = q.reshape(b, n, heads, c // heads).transpose(1, 2)
        k = k.reshape(b, n, heads, c // heads).transpose(1, 2)
        attention = (q @ k.transpose(-2, -1) / (c // heads) ** 0.5).softmax(-1)
        fused = {"mean": attention.mean(1), "max": attention.amax(1), "min": attention.amin(1)}[head_fusion]
        return fused[:, 0, model.num_prefix_tokens :]


@pytest.mark.parametrize("layer, head_fusion", [(0, "mean"), (2, "max"), (-1, "min"), (-4, "mean"), (5, "mean")])
def test_raw_attention_of_layer_k_is_that_blocks_class_token_row(vit, images, layer, head_fusion):
    grid = vit.patch_embed.dynamic_feat_size((64, 64))
    low, _, _ = attention_maps(vit, images, None, "raw-attention", {"layer": layer, "head_fusion": head_fusion})
    expected = _direct_class_token_attention(vit, images, layer, head_fusion).reshape(2, *grid)
    # terms ≥ 0: that block's softmax bound (its qkv by F.linear here, h @ W.T + b there), the head fusion
    rtol = recorded_rtols(vit, images)[layer] + float32_relative(vit.blocks[layer].attn.num_heads + 4)
    torch.testing.assert_close(low, expected, atol=0, rtol=rtol)
    # the public entry point: the same map upsampled, and -1 is the default (today's raw attention)
    maps = explain(vit, images, None, "raw-attention", layer=layer, head_fusion=head_fusion)
    torch.testing.assert_close(
        maps,
        torch.nn.functional.interpolate(expected[:, None], size=(64, 64), mode="bilinear")[:, 0],
        atol=0,
        rtol=rtol + float32_relative(8),
    )  # + the 4-term bilinear resize
    assert torch.equal(explain(vit, images, None, "raw-attention", layer=5), explain(vit, images, None, "raw-attention"))


@pytest.mark.parametrize("layer", [6, -7, 100])
def test_a_layer_outside_the_blocks_is_refused_naming_how_many_there_are(vit, images, layer):
    with pytest.raises(ExplainerError, match=rf"layer {layer} is outside test_vit's 6 blocks; use 0..5 \(first to last\) or -6..-1"):
        explain(vit, images, None, "raw-attention", layer=layer)


def vit_explain_rollout(attentions, discard_ratio, head_fusion, rows_sum_to_one=True):
    """jacobgil/vit-explain vit_rollout.py ``rollout``, line for line, on one image ([1, heads, N, N]
    per block, as its attn_drop hook records them). ``rows_sum_to_one``: ``a.sum(dim=-1, keepdim=True)``,
    the renormalisation its comment and the paper mean (its issue #16); False: its literal
    ``a / a.sum(dim=-1)``, which broadcasts each row's sum over the columns."""
    import numpy as np

    result = torch.eye(attentions[0].size(-1))
    with torch.no_grad():
        for attention in attentions:
            if head_fusion == "mean":
                attention_heads_fused = attention.mean(axis=1)
            elif head_fusion == "max":
                attention_heads_fused = attention.max(axis=1)[0]
            elif head_fusion == "min":
                attention_heads_fused = attention.min(axis=1)[0]
            # Drop the lowest attentions, but don't drop the class token
            flat = attention_heads_fused.view(attention_heads_fused.size(0), -1)
            _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
            indices = indices[indices != 0]
            flat[0, indices] = 0
            identity = torch.eye(attention_heads_fused.size(-1))
            a = (attention_heads_fused + 1.0 * identity) / 2
            a = a / a.sum(dim=-1, keepdim=True) if rows_sum_to_one else a / a.sum(dim=-1)
            result = torch.matmul(a, result)
    mask = result[0, 0, 1:]
    width = int(mask.size(-1) ** 0.5)
    mask = mask.reshape(width, width).numpy()
    return torch.from_numpy(mask / np.max(mask))


@pytest.fixture()
def unfused(vit):
    """timm's unfused attention, so the forward that vit-explain's hook watches and ours are the same
    computation to the bit (the fused kernel rounds differently, which could move a discard threshold)."""
    for block in vit.blocks:
        block.attn.fused_attn = False
    yield vit
    for block in vit.blocks:
        block.attn.fused_attn = True


@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.5, 0.9])
def test_rollout_equals_vit_explains_rule(unfused, images, head_fusion, discard_ratio):
    recorded = timm_attention(unfused, images)
    for block in unfused.blocks:
        block.attn.fused_attn = False  # timm_attention switched it back on
    low, _, _ = attention_maps(unfused, images, None, "rollout", {"head_fusion": head_fusion, "discard_ratio": discard_ratio})
    n = recorded[0].shape[-1]
    # ours recomputes each block's attention (its softmax bound), rollout's terms are all ≥ 0, and
    # the division by the max moves it by the max's own relative error again
    rtol = 2 * rollout_rtol(recorded_rtols(unfused, images), n) + float32_relative(2)
    for i in range(images.shape[0]):
        ours = low[i] / low[i].max()
        expected = vit_explain_rollout([a[i : i + 1] for a in recorded], discard_ratio, head_fusion)
        torch.testing.assert_close(ours, expected, atol=0, rtol=rtol)
        literal = vit_explain_rollout([a[i : i + 1] for a in recorded], discard_ratio, head_fusion, rows_sum_to_one=False)
        if discard_ratio == 0 and head_fusion == "mean":
            # the rows of (A + I)/2 already sum to one: vit-explain's literal line is the same rollout
            torch.testing.assert_close(ours, literal, atol=0, rtol=rtol)
        else:
            # where its broadcast matters, rows are renormalised here: from the same recorded attentions
            # the two rules differ by more than both sides' own rollout roundings (no attention bound)
            own = 2 * (rollout_rtol([0.0] * len(recorded), n) + float32_relative(2))
            assert ((expected - literal).abs() > own * literal.abs()).any()


def test_rollout_with_discard_ratio_zero_is_todays_rollout(vit, images):
    """discard_ratio 0 (the default, and the stored setting) = the product of (A + I)/2, rows renormalised."""
    recorded = [a.mean(1) for a in timm_attention(vit, images)]
    n = recorded[0].shape[-1]
    expected = torch.eye(n).expand(2, n, n)
    for a in recorded:
        a = (a + torch.eye(n)) / 2
        expected = (a / a.sum(-1, keepdim=True)) @ expected
    grid = vit.patch_embed.dynamic_feat_size((64, 64))
    for params in ({}, {"discard_ratio": 0.0}, {"discard_ratio": 0.0, "head_fusion": "mean"}):
        low, _, _ = attention_maps(vit, images, None, "rollout", {"head_fusion": "mean", "discard_ratio": 0.0, **params})
        # ours recomputes each block's attention: its softmax bound, through rollout's ≥ 0 terms
        rtol = rollout_rtol(recorded_rtols(vit, images), n)
        torch.testing.assert_close(low, expected[:, 0, 1:].reshape(2, *grid), atol=0, rtol=rtol)
    torch.testing.assert_close(rollout(recorded, 0.0), expected, atol=0, rtol=rollout_rtol([0.0] * len(recorded), n))


# ------------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    """test_vit as the CLI builds it (1000 classes), seeded: a file for --checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "test_vit.pth"
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), path)
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--explainer", "raw-attention", "--layer", "6"],
            "layer 6 is outside test_vit's 6 blocks; use 0..5 (first to last) or -6..-1 (from the end)",
        ),
        (["--explainer", "raw-attention", "--layer", "-7"], "layer -7 is outside test_vit's 6 blocks"),
        (["--explainer", "rollout", "--discard-ratio", "1"], "discard_ratio must be in [0, 1)"),
        (["--explainer", "rollout", "--discard-ratio", "-0.5"], "discard_ratio must be in [0, 1)"),
        (["--explainer", "rollout", "--head-fusion", "median"], "head_fusion must be one of mean, max, min"),
        (["--explainer", "rollout", "--layer", "2"], "explainer 'rollout' takes no parameter 'layer'"),
        (["--explainer", "gradcam", "--discard-ratio", "0.5"], "explainer 'gradcam' takes no parameter 'discard_ratio'"),
    ],
)
def test_bad_attention_options_are_one_line_and_exit_2(vit_checkpoint, shared_data, tmp_path, extra, message):
    from typer.testing import CliRunner

    from alignbench.cli.app import app

    image = shared_data / "imagenet-val-10" / "ILSVRC2012_val_00009492.JPEG"
    db = tmp_path / "s.db"
    for args in (
        ["explain", "test_vit", str(image), "--out", str(tmp_path / "maps")],
        ["score", "test_vit", "--limit", "1", "--workers", "0", "--db", f"sqlite:///{db}"],
    ):
        result = CliRunner().invoke(app, [*args, "--checkpoint", str(vit_checkpoint), *extra])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
    if db.exists():  # refused before any run row was written
        import sqlite3

        assert sqlite3.connect(db).execute("SELECT count(*) FROM run").fetchone() == (0,)


def test_attention_options_reach_the_maps_through_explain(vit_checkpoint, shared_data, tmp_path):
    import numpy as np
    from typer.testing import CliRunner

    from alignbench.cli.app import app

    image = shared_data / "imagenet-val-10" / "ILSVRC2012_val_00009492.JPEG"
    maps = {}
    for label, extra in (
        ("last", []),
        ("minus1", ["--layer", "-1"]),
        ("first", ["--layer", "0"]),
        ("first-max", ["--layer", "0", "--head-fusion", "max"]),
    ):
        out = tmp_path / label
        result = CliRunner().invoke(
            app,
            [
                "explain",
                "test_vit",
                str(image),
                "--out",
                str(out),
                "--checkpoint",
                str(vit_checkpoint),
                "--explainer",
                "raw-attention",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        maps[label] = np.load(out / "ILSVRC2012_val_00009492.npy")
    assert np.array_equal(maps["last"], maps["minus1"])
    assert not np.allclose(maps["last"], maps["first"]) and not np.allclose(maps["first"], maps["first-max"])

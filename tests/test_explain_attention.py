"""Attention rollout and raw attention for ViT / DeiT."""

from __future__ import annotations

import pytest
import timm
import torch

from alignbench.errors import ExplainerError
from alignbench.explainers import explain, explain_batch
from alignbench.explainers._attention import attention_probabilities, rollout


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


def test_recomputed_attention_equals_timms(vit, images):
    captured = []
    handles = [b.attn.register_forward_pre_hook(lambda _m, args: captured.append(args[0])) for b in vit.blocks]
    with torch.no_grad():
        vit(images)
        ours = [attention_probabilities(b.attn, x) for b, x in zip(vit.blocks, captured)]
    for handle in handles:
        handle.remove()
    for a, b in zip(ours, timm_attention(vit, images)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_rollout_known_answer():
    # Ã1 = (A1 + I)/2 = [[.75, .25], [0, 1]], Ã2 = [[1, 0], [.25, .75]]; R = Ã2 Ã1
    a1 = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])
    a2 = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    expected = torch.tensor([[[0.75, 0.25], [0.1875, 0.8125]]])
    torch.testing.assert_close(rollout([a1, a2]), expected)


def test_rollout_and_raw_attention_on_a_vit(vit, images):
    grid = vit.patch_embed.dynamic_feat_size((64, 64))  # test_vit takes any input size
    result = explain_batch(vit, images, None, "rollout")
    assert result.maps.shape == (2, 64, 64)
    assert torch.equal(result.targets, result.logits.argmax(1))
    with torch.no_grad():
        torch.testing.assert_close(result.logits, vit(images))
    # raw attention = the class-token row of the last block, heads averaged, upsampled
    last = timm_attention(vit, images)[-1].mean(1)[:, 0, vit.num_prefix_tokens :].reshape(2, *grid)
    expected = torch.nn.functional.interpolate(last[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(explain(vit, images, None, "raw-attention"), expected, atol=1e-6, rtol=1e-5)
    # one image alone = the same image in the batch; no hooks left
    torch.testing.assert_close(explain(vit, images[1:], None, "rollout")[0], result.maps[1], atol=1e-6, rtol=1e-5)
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

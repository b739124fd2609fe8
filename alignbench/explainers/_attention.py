"""Attention maps of ViT / DeiT: attention rollout (Abnar & Zuidema 2020) and one block's raw
attention; and of a CA-Stream model: its last cross-attention block's attention (``ca-attention``).

timm's attention uses fused ``scaled_dot_product_attention`` and never materialises the attention
matrix, so each block's input is captured with a forward pre-hook (removed before returning, also on
error) and softmax(q·k^T·scale) is recomputed from the block's own ``qkv``, ``q_norm``, ``k_norm`` and
``scale``; the result equals timm's unfused path (tests/explainers/test_attention.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from alignbench._utils.precision import forward_autocast
from alignbench.errors import ExplainerError
from alignbench.explainers._split import Targets, frozen_parameters, model_name, resolve_targets
from alignbench.models._ca_stream import CAStreamModel


def attention_modules(model: nn.Module, method: str = "rollout") -> list[nn.Module]:
    """The self-attention module of every block of a ViT/DeiT-style model, checked usable.

    Only timm's plain ViT ``Attention`` qualifies: variants that add rotary embeddings or relative
    position biases inside ``forward`` (EVA, BEiT, ...) would be recomputed wrongly, so they are refused.
    """
    from timm.models.vision_transformer import Attention

    blocks = getattr(model, "blocks", None)
    attns = [getattr(block, "attn", None) for block in blocks] if isinstance(blocks, (nn.Sequential, nn.ModuleList)) else []
    usable = bool(attns) and all(type(a) is Attention for a in attns)
    if not usable or not hasattr(model, "patch_embed"):
        raise ExplainerError(
            f"{method} needs a ViT/DeiT-style model (patch tokens and self-attention blocks); "
            f"{model_name(model)} has none — use a CAM explainer such as gradcam or threshold-gradcam"
        )
    if getattr(model, "cls_token", None) is None:
        raise ExplainerError(f"{method} reads the class token's attention row; {model_name(model)} has no class token")
    return attns


def attention_probabilities(attn: nn.Module, x: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) per head, [B, heads, N, N], from the block's input tokens x [B, N, C]."""
    b, n, _ = x.shape
    q, k, _ = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def fuse_heads(attention: Tensor, head_fusion: str) -> Tensor:
    """[B, heads, N, N] -> [B, N, N]: mean (Abnar & Zuidema), or max / min (Gildenblat's vit-explain)."""
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    return attention.amin(dim=1)


def block_index(attns: list[nn.Module], layer: int, model: nn.Module) -> int:
    """``layer`` (a Python index: 0 the first block, -1 the last) as a position in ``attns``, checked."""
    n = len(attns)
    if not -n <= layer < n:
        raise ExplainerError(
            f"layer {layer} is outside {model_name(model)}'s {n} blocks; use 0..{n - 1} (first to last) or -{n}..-1 (from the end)"
        )
    return layer % n


def rollout(attentions: list[Tensor], discard_ratio: float = 0.0) -> Tensor:
    """Attention rollout R = Ã_L ··· Ã_1 with Ã_l = (A_l + I) / 2, rows renormalised (Abnar & Zuidema
    2020, eq. 1-2: the identity accounts for the residual connection). ``discard_ratio`` R zeroes the
    int(N²·R) smallest entries of each image's fused N×N attention before adding I, never the class
    token's attention to itself (flat index 0), as jacobgil/vit-explain's vit_rollout.py does; 0 is
    the original method. [B, N, N] each -> [B, N, N].

    vit-explain then divides by ``a.sum(dim=-1)`` without keepdim, which broadcasts each *row*'s sum
    over the *columns* (its issue #16); the rows are renormalised here, as the paper's rollout and
    vit-explain's comment intend. With R = 0 and mean fusion the rows already sum to 1 and both agree.
    """
    b, n, _ = attentions[0].shape
    eye = torch.eye(n, device=attentions[0].device, dtype=attentions[0].dtype)
    result = eye.expand(b, n, n)
    for a in attentions:
        if discard_ratio > 0:
            flat = a.flatten(1)
            lowest = flat.topk(int(flat.shape[1] * discard_ratio), dim=1, largest=False).indices
            discard = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
            discard[:, 0] = False  # the class token's attention to itself
            a = flat.masked_fill(discard, 0.0).view(b, n, n)
        a = (a + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result


def _grid(model: nn.Module, images: Tensor, tokens: int, prefix: int) -> tuple[int, int]:
    embed = model.patch_embed
    if hasattr(embed, "dynamic_feat_size") and getattr(model, "dynamic_img_size", False):
        h, w = embed.dynamic_feat_size(tuple(images.shape[-2:]))
    else:
        h, w = embed.grid_size
    if h * w != tokens - prefix:
        raise ExplainerError(f"{model_name(model)} gives {tokens - prefix} patch tokens, not the {h}x{w} grid its patch embedding implies")
    return int(h), int(w)


def attention_maps(
    model: nn.Module, images: Tensor, targets: Targets, method: str, params: dict[str, Any], *, precision: str = "fp32"
) -> tuple[Tensor, Tensor, Tensor]:
    """(maps [B, h, w] at patch resolution, logits, targets): rollout, or the raw attention of block
    ``params["layer"]`` (default the last).

    Both are class-agnostic (the class token's attention row); the targets are resolved and returned
    so callers store the same triple as for CAM methods. One forward gives the logits and the maps.
    ``precision`` bf16/fp16: the forward runs under autocast; each block's attention is recomputed
    from its float32-cast input outside it, so the maps are float32.
    """
    attns = attention_modules(model, method)
    if method != "rollout":  # raw attention needs its own block only
        attns = [attns[block_index(attns, params.get("layer", -1), model)]]
    inputs: list[Tensor] = []
    handles = [a.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for a in attns]
    try:
        with torch.no_grad(), frozen_parameters(model):
            with forward_autocast(images.device, precision):
                logits = model(images)
            logits = logits.float()
            attentions = [fuse_heads(attention_probabilities(a, x.float()), params["head_fusion"]) for a, x in zip(attns, inputs)]
    finally:
        for handle in handles:
            handle.remove()
    relevance = rollout(attentions, params.get("discard_ratio", 0.0)) if method == "rollout" else attentions[0]
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    h, w = _grid(model, images, relevance.shape[-1], prefix)
    maps = relevance[:, 0, prefix:].reshape(-1, h, w)  # row 0: what the class token attends to
    return maps, logits, resolve_targets(targets, logits)


def ca_stream_model(model: nn.Module, method: str = "ca-attention") -> CAStreamModel:
    """``model`` if it is a CA-Stream model, else ExplainerError saying how to get one."""
    if not isinstance(model, CAStreamModel):
        raise ExplainerError(
            f"{method} reads a CA-Stream's attention; {model_name(model)} has none — load the model with "
            "--ca-stream (load_model(..., ca_stream=True)) or use a CAM explainer"
        )
    return model


def ca_attention_maps(model: nn.Module, images: Tensor, targets: Targets) -> tuple[Tensor, Tensor, Tensor]:
    """(maps [B, h, w] at the last stream block's resolution, logits, targets): that block's attention
    over its positions, softmax(qᵀA/√C) (the official ``CLS_Attention``'s ``attend(dots)``); the
    dispatcher upsamples it bilinearly and then min-max normalises it. Class-agnostic: one map
    whatever the target; the targets are resolved and returned so callers store the same triple as
    for CAM methods.
    """
    stream_model = ca_stream_model(model)
    with torch.no_grad(), frozen_parameters(model):
        logits, attention = stream_model.forward_with_attention(images)
    last = attention[-1][:, 0]  # [B, h, w]: the last block's attention logits
    return last.flatten(1).softmax(dim=1).view_as(last), logits, resolve_targets(targets, logits)

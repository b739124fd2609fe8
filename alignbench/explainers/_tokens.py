"""CAMs on token transformers (ViT, DeiT, EVA, ...): A is one block's patch tokens laid on their grid.

pytorch-grad-cam's recipe for a ViT (its usage_examples/vit_example.py) hooks ``blocks[-1].norm1``
and reshapes the hooked [B, N, C] tokens with ``reshape_transform``: the class token (and any
distillation or register token: timm's ``num_prefix_tokens``) dropped, the N - prefix patch tokens
laid on the patch grid, channels first. Here the same layer is cut the way ``_split`` cuts a CNN at
forward_features: a forward hook hands the block's norm1 output back as a leaf that requires grad
(float32), the parameters are frozen and the images need no gradient, so nothing before that leaf
is recorded and the backward runs through the rest of the model from that layer only (the rest of
the block — attention over the leaf's tokens plus the residual, a constant — the later blocks, the
final norm and the head). A and dy_t/dA are then the library's hooked activation and gradient,
reshaped alike; every core CAM applies to them unchanged.

``layer`` picks the block (Python indexing: 0 the first, -1 the last, the default). Swin and other
models whose ``forward_features`` is already a spatial map (NHWC included) are not token
transformers here: ``_split`` explains them at forward_features. A token model whose tokens cannot
be laid on a grid is refused, naming why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from alignbench._utils.precision import forward_autocast
from alignbench.errors import ExplainerError
from alignbench.explainers._split import Evidence, Targets, frozen_parameters, model_name, resolve_targets

# pytorch-grad-cam methods that need more than the hooked layer's activations and gradients, refused
# on a token transformer (AblationCAM gets the library's AblationLayerVit, ``_library``).
TOKEN_REFUSED = {
    "fullgrad": "it gathers the biases of every convolution and batch norm, which a ViT has none of",
    "shapleycam": "its Hessian-vector product needs the graph from the input through every block",
}


def is_token_transformer(model: nn.Module) -> bool:
    """timm's ViT family (ViT, DeiT, EVA, BEiT, ...): patch tokens through ``blocks``, with prefix tokens."""
    return hasattr(model, "num_prefix_tokens") and hasattr(model, "blocks") and hasattr(model, "patch_embed")


def block_of(model: nn.Module, layer: int, method: str) -> nn.Module:
    """The norm1 of block ``layer`` (checked: in range, and a module that the block applies to its tokens)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0:
        raise ExplainerError(f"{method} on a token transformer needs its blocks; {model_name(model)} has no blocks list")
    n = len(blocks)
    if not -n <= layer < n:
        raise ExplainerError(
            f"layer {layer} is outside {model_name(model)}'s {n} blocks; use 0..{n - 1} (first to last) or -{n}..-1 (from the end)"
        )
    norm = getattr(blocks[layer], "norm1", None)
    if not isinstance(norm, nn.Module):
        raise ExplainerError(
            f"{method}: block {layer % n} of {model_name(model)} ({type(blocks[layer]).__name__}) has no norm1, "
            "the layer whose tokens a CAM is taken on; use rollout, raw-attention or saliency"
        )
    return norm


def check_grid(model: nn.Module, method: str) -> None:
    """The model's patch embedding declares the grid its patch tokens lie on, or ExplainerError saying why not."""
    embed = model.patch_embed
    grid = getattr(embed, "grid_size", None)
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2 and all(isinstance(v, int) and v > 0 for v in grid)):
        raise ExplainerError(
            f"{method} lays the patch tokens on their grid; {model_name(model)}'s patch embedding "
            f"({type(embed).__name__}) declares no grid_size, so its tokens cannot be laid on one — use rollout, raw-attention or saliency"
        )


def token_grid(model: nn.Module, images: Tensor, tokens: int) -> tuple[int, int, int]:
    """(prefix, h, w): the prefix tokens to drop and the patch grid of ``images``, checked against ``tokens``."""
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    embed = model.patch_embed
    if hasattr(embed, "dynamic_feat_size") and getattr(model, "dynamic_img_size", False):
        h, w = embed.dynamic_feat_size(tuple(images.shape[-2:]))
    else:
        h, w = embed.grid_size
    if h * w != tokens - prefix:
        raise ExplainerError(
            f"{model_name(model)} gives {tokens} tokens, which are not {prefix} prefix token(s) and the {h}x{w} patch grid "
            "its patch embedding implies: they cannot be laid on a grid"
        )
    return prefix, int(h), int(w)


def to_grid(tokens: Tensor, prefix: int, h: int, w: int) -> Tensor:
    """[B, N, C] tokens -> [B, C, h, w]: the prefix tokens dropped (pytorch-grad-cam's reshape_transform)."""
    return tokens[:, prefix:].reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)


def reshape_transform(model: nn.Module, images: Tensor) -> Callable[[Tensor], Tensor]:
    """pytorch-grad-cam's ``reshape_transform`` for ``model`` on ``images`` (usage_examples/vit_example.py)."""

    def reshape(tokens: Tensor) -> Tensor:
        return to_grid(tokens, *token_grid(model, images, tokens.shape[1]))

    return reshape


@contextmanager
def leaf_at(norm: nn.Module) -> Iterator[list[Tensor]]:
    """Inside, ``norm``'s output is handed on as a float32 leaf that requires grad (appended to the
    yielded list): the graph starts there, whatever precedes it (module docstring). A forward hook,
    registered first, so hooks registered later (pytorch-grad-cam's) see the leaf."""
    leaves: list[Tensor] = []

    def as_leaf(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        leaf = output.detach().float().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    handle = norm.register_forward_hook(as_leaf)
    try:
        yield leaves
    finally:
        handle.remove()


def token_evidence(model: nn.Module, images: Tensor, targets: Targets = None, *, layer: int = -1, precision: str = "fp32") -> Evidence:
    """A (block ``layer``'s norm1 output, patch tokens on their grid) and dy_t/dA, NCHW, from one
    forward that records the graph from that layer on and one backward through it (see the module
    docstring). ``model`` must be in eval mode; y_t is the target logit, pre-softmax."""
    norm = block_of(model, layer, "a CAM")
    with leaf_at(norm) as leaves:
        with torch.enable_grad(), frozen_parameters(model):
            with forward_autocast(images.device, precision):
                logits = model(images.detach())
            logits = logits.float()
            t = resolve_targets(targets, logits.detach())
            if len(leaves) != 1 or not logits.requires_grad:
                raise ExplainerError(
                    f"{model_name(model)}'s logits do not depend on block {layer}'s norm1 output "
                    f"(it ran {len(leaves)} time(s) in the forward); a CAM needs them to"
                )
            score = logits.gather(1, t[:, None]).sum()  # each image's own gradient: see _split.gradient_evidence
            (grad,) = torch.autograd.grad(score, leaves[0])
    tokens = leaves[0].detach()
    grid = token_grid(model, images, tokens.shape[1])
    return Evidence(activations=to_grid(tokens, *grid), gradients=to_grid(grad, *grid), logits=logits.detach(), targets=t)

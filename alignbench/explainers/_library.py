"""Methods the core does not cover, computed by pytorch-grad-cam itself (STYLE 5: extend, don't rewrite).

The library needs a target *module*; A is the output of ``forward_features``, which is not one in
every timm model, so the library sees the model as ``SplitModel``: ``features`` (the target layer,
output A in NCHW) followed by ``head``. Methods that need only A (and dy/dA) run ``features`` outside
autograd, as the core does; FullGrad and ShapleyCAM need input gradients and get the full graph.
Either way parameters are frozen for the call and their flags restored, so none receives a gradient.
A token transformer (ViT/DeiT) is handed over unmodified, hooked at a block's norm1 with the
library's own reshape_transform (``_tokens``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from alignbench.errors import ExplainerError
from alignbench.explainers._methods import MethodSpec
from alignbench.explainers._split import Split, Targets, frozen_parameters, model_name, resolve_targets, split_model
from alignbench.explainers._tokens import block_of, is_token_transformer, leaf_at, reshape_transform


class _Features(nn.Module):
    def __init__(self, split: Split, full_graph: bool, heads: list) -> None:
        super().__init__()
        self.split = split  # a frozen dataclass, not a submodule: the model is registered once, below
        self.full_graph = full_graph
        self.heads = heads  # SplitModel's: the head of the images this module saw last

    def forward(self, images: Tensor) -> Tensor:
        if self.full_graph:
            a, head = self.split.cut(images)
        else:
            with torch.no_grad():
                a, head = self.split.cut(images)
            # the library hooks this output for dy/dA; the graph behind it is the head alone
            a = a.requires_grad_(True)
        self.heads[:] = [head]
        return a


class SplitModel(nn.Module):
    """The classifier as pytorch-grad-cam sees it: ``features`` (target layer) then ``head``.

    The head is the one ``Split.cut`` gave for the images ``features`` saw last (for a CA-Stream model
    it holds their stream token); it is kept here, not on ``features``, which AblationCAM swaps out.
    """

    def __init__(self, model: nn.Module, full_graph: bool = False) -> None:
        super().__init__()
        self._split = split_model(model)
        self.model = model
        self._heads: list = []
        self.features = _Features(self._split, full_graph, self._heads)

    def forward(self, images: Tensor) -> Tensor:
        a = self.features(images)
        return self._heads[0](a)


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """RandomCAM draws weights and KernelPCA's ARPACK its start vector from numpy's global RNG:
    seed it for the call (deterministic maps) and give the caller's RNG state back afterwards."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        yield
    finally:
        np.random.set_state(state)


# ShapleyCAM differentiates dy/dA once more (a Hessian-vector product): through a linear head dy/dA
# depends on the weights alone, and with frozen weights it has no graph to differentiate. It uses
# torch.autograd.grad, which never accumulates into .grad, so it runs with the flags as they are.
_NEEDS_PARAMETER_GRAPH = frozenset({"shapleycam"})


@contextlib.contextmanager
def _parameters_untouched(model: nn.Module, freeze: bool) -> Iterator[None]:
    """Parameters frozen for the call (when ``freeze``), and each one's ``.grad`` as it was afterwards."""
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        with frozen_parameters(model) if freeze else contextlib.nullcontext():
            yield
    finally:
        for p, grad in grads:
            p.grad = grad


def library_maps(
    model: nn.Module, images: Tensor, targets: Targets, spec: MethodSpec, params: dict[str, Any]
) -> tuple[Tensor, Tensor, Tensor]:
    """(maps [B, H, W] on the images' device, logits, targets) from pytorch-grad-cam's ``spec.library_class``.

    The library normalises each map to [0, 1] and resizes it to the input with cv2 (bilinear).
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = getattr(importlib.import_module("pytorch_grad_cam"), str(spec.library_class))
    given = None
    if targets is not None:
        # validated before the call: the library turns an IndexError inside into a printed message
        num_classes = getattr(model, "num_classes", None)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ExplainerError(f"{model_name(model)} has no num_classes to check targets against; pass targets=None (top-1)")
        given = resolve_targets(targets, images.new_zeros(images.shape[0], num_classes))
    kwargs: dict[str, Any] = {}
    if is_token_transformer(model):
        # the library's own ViT recipe (usage_examples/vit_example.py): the unmodified model hooked at
        # a block's norm1, the patch tokens laid on their grid by reshape_transform; the graph starts
        # at that norm1's output, as the split starts it at A (``_tokens.leaf_at``, hooked before the library)
        wrapper, layers = model, [block_of(model, int(params.get("layer", -1)), spec.name)]
        kwargs["reshape_transform"] = reshape_transform(model, images)
        start_graph = leaf_at(layers[0])
        if spec.name == "ablationcam":
            from pytorch_grad_cam.ablation_layer import AblationLayerVit

            kwargs["ablation_layer"] = AblationLayerVit()
    else:
        wrapper = SplitModel(model, full_graph=spec.full_graph)
        # FullGrad ignores target layers (it takes every bias) and prints a warning when given some.
        layers = [] if spec.name == "fullgrad" else [wrapper.features]
        if spec.name == "ablationcam":
            from pytorch_grad_cam import AblationLayer

            kwargs["ablation_layer"] = AblationLayer()  # the library's default is one shared instance
        start_graph = contextlib.nullcontext([])
    with start_graph:
        cam = cam_class(wrapper, layers, **kwargs)
        try:
            # tqdm progress bars of ScoreCAM/AblationCAM go to stderr; a library call should be silent
            with (
                _parameters_untouched(model, freeze=spec.name not in _NEEDS_PARAMETER_GRAPH),
                _seeded_numpy(int(params.get("seed", 0))),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                grayscale = cam(images, None if given is None else [ClassifierOutputTarget(int(t)) for t in given])
            logits = cam.outputs.detach()
        finally:
            cam.activations_and_grads.release()
    t = given if given is not None else resolve_targets(targets, logits)
    maps = torch.from_numpy(np.ascontiguousarray(grayscale, dtype=np.float32)).to(images.device)
    return maps, logits, t

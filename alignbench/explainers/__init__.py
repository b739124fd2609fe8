"""Explainers: heatmaps of what a classifier looked at, as tensors on the model's device.

Importing this package does not import torch: the registry (``METHODS``, ``explainer_setting``) is
plain data that the store and a cached ``score`` read; the functions below import the torch modules
on first call. Methods:

- ``gradcam``, ``threshold-gradcam`` (the paper's two) and ``gradcam++``, ``xgradcam``, ``layercam``,
  ``hirescam``, ``eigengradcam``: one torch-native core that splits the model at A (``_split``);
- every other pytorch-grad-cam method (``eigencam``, ``scorecam``, ``ablationcam``, ``fullgrad``, ...)
  through the library itself (``_library``);
- ``rollout`` and ``raw-attention`` for ViT / DeiT, ``ca-attention`` for CA-Stream models (``_attention``);
- ``centre_bias_map``: the model-free reference every comparison shows (``_centre_bias``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from alignbench._utils.lazy import lazy_attributes
from alignbench.explainers._centre_bias import CENTRE_BIAS, CENTRE_BIAS_FAMILY, CENTRE_BIAS_SIGMA_FRAC, centre_bias_map
from alignbench.explainers._methods import (DEFAULT_METHOD, HEAD_FUSIONS, METHODS, MethodSpec, ParamSpec, check_params, explainer_setting,
                                            resolve_method)

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor, nn

    from alignbench.explainers._explain import Explanation
    from alignbench.explainers._files import ExplainedFiles
    from alignbench.explainers._split import Split, Targets, split_model
    from alignbench.models import ModelRequest
    from alignbench.models.preprocessing import Preprocessing

__all__ = [
    "CENTRE_BIAS",
    "CENTRE_BIAS_FAMILY",
    "CENTRE_BIAS_SIGMA_FRAC",
    "DEFAULT_METHOD",
    "HEAD_FUSIONS",
    "METHODS",
    "Explanation",
    "MethodSpec",
    "ParamSpec",
    "Split",
    "centre_bias_map",
    "check_applicable",
    "check_params",
    "explain",
    "explain_batch",
    "explain_files",
    "explainer_setting",
    "resolve_method",
    "split_model",
]


def explain(model: nn.Module, images: Tensor, targets: Targets = None, method: str = DEFAULT_METHOD, **params: Any) -> Tensor:
    """Heatmaps [B, H, W] (float32, the images' size, on the model's device) for normalised images [B, 3, H, W].

    ``targets``: None (explain the top-1 class), one class index, or one per image; ``method``: a
    name or alias from ``METHODS``; ``params``: the method's parameters (e.g. ``threshold=0.3``).
    """
    from alignbench.explainers._explain import explain as _explain

    return _explain(model, images, targets, method, **params)


def explain_batch(
    model: nn.Module, images: Tensor, targets: Targets = None, method: str = DEFAULT_METHOD, *, precision: str = "fp32", **params: Any
) -> Explanation:
    """Like ``explain``, with the logits and targets of the same forward pass (an ``Explanation``).
    ``precision`` ``bf16``/``fp16``: the model's forward passes under autocast, the maps float32."""
    from alignbench.explainers._explain import explain_batch as _explain_batch

    return _explain_batch(model, images, targets, method, precision=precision, **params)


def check_applicable(model: nn.Module, method: str, **params: Any) -> None:
    """Raise ExplainerError if ``method`` (with ``params``) cannot explain ``model`` (e.g. ``rollout``
    on a CNN, ``raw-attention`` with a ``layer`` the model does not have)."""
    from alignbench.explainers._explain import check_applicable as _check_applicable

    _check_applicable(model, method, **params)


def explain_files(
    model: str | ModelRequest | nn.Module,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = DEFAULT_METHOD,
    params: dict[str, Any] | None = None,
    target: int | None = None,
    device: str = "auto",
    batch_size: int = 8,
    preprocessing: Preprocessing | None = None,
) -> ExplainedFiles:
    """Explain image files (a directory: its image files) with the model's eval transform and write
    ``out_dir/<stem>.npy`` (float32 map, model input size) and ``out_dir/<stem>.png`` (overlay naming
    the predicted class). Unreadable files are skipped and listed; none readable: ExplainerError (exit 1)."""
    from alignbench.explainers._files import explain_files as _explain_files

    return _explain_files(
        model, paths, out_dir, method=method, params=params, target=target, device=device, batch_size=batch_size, preprocessing=preprocessing,
    )


# The split at A is shared with training (Grad-CAM consistency differentiates through it).
__getattr__, __dir__ = lazy_attributes(
    __name__,
    {"Explanation": "alignbench.explainers._explain", "Split": "alignbench.explainers._split", "split_model": "alignbench.explainers._split"},
)

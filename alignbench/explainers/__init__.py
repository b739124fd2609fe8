"""Explainers: heatmaps of what a classifier looked at, as tensors on the model's device.

Importing this package does not import torch: the registry (``METHODS``, ``explainer_setting``) is
plain data that the store and a cached ``score`` read; ``explain``, ``explain_batch``,
``check_applicable`` and ``explain_files`` load their torch modules on first use. Methods:

- ``gradcam``, ``threshold-gradcam`` (the paper's two) and ``gradcam++``, ``xgradcam``, ``layercam``,
  ``hirescam``, ``eigengradcam``: one torch-native core that splits the model at A (``_split``; on a
  ViT/DeiT, a block's patch tokens laid on their grid, ``_tokens``);
- every other pytorch-grad-cam method (``eigencam``, ``scorecam``, ``ablationcam``, ``fullgrad``, ...)
  through the library itself (``_library``);
- ``saliency``, ``input-x-gradient``, ``integrated-gradients``, ``smoothgrad``, ``guided-backprop``,
  ``occlusion``: input attributions from captum, reduced to one map per image (``_captum``);
- ``rollout`` and ``raw-attention`` for ViT / DeiT, ``ca-attention`` for CA-Stream models (``_attention``);
- ``centre_bias_map``: the model-free reference every comparison shows (``_centre_bias``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignbench._utils.lazy import lazy_attributes
from alignbench.explainers._centre_bias import CENTRE_BIAS, CENTRE_BIAS_FAMILY, CENTRE_BIAS_SIGMA_FRAC, centre_bias_map
from alignbench.explainers._methods import (
    DEFAULT_METHOD,
    HEAD_FUSIONS,
    METHODS,
    MethodSpec,
    ParamSpec,
    check_params,
    explainer_setting,
    resolve_method,
)

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.explainers._explain import Explanation, check_applicable, explain, explain_batch
    from alignbench.explainers._files import ExplainedFiles, explain_files  # noqa: F401 (lazy: _LAZY)
    from alignbench.explainers._split import Split, split_model

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


# public name -> private module that defines it (imports torch; loaded on first use). The split at A
# is shared with training (Grad-CAM consistency differentiates through it).
_LAZY = {
    "explain": "alignbench.explainers._explain",
    "explain_batch": "alignbench.explainers._explain",
    "check_applicable": "alignbench.explainers._explain",
    "Explanation": "alignbench.explainers._explain",
    "explain_files": "alignbench.explainers._files",
    "ExplainedFiles": "alignbench.explainers._files",
    "Split": "alignbench.explainers._split",
    "split_model": "alignbench.explainers._split",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

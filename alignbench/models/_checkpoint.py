"""Reading checkpoints and fitting them onto timm models (original-repository key names remapped).

The published DCLS checkpoints use the original repositories' layouts (facebookresearch ConvNeXt,
sail-sg metaformer, apple ml-fastvit). timm ships a ``checkpoint_filter_fn`` beside each of those
architectures that renames such keys to its own; applied to the model *after* conversion, it maps
the DCLS ``.P``/``.SIG`` keys too, since they ride on the same module paths.

MoCo v3 (facebookresearch/moco-v3) checkpoints need no renaming: its ResNets are torchvision's, whose
names timm's ``resnet*`` keep, and its ViTs are timm's own ``VisionTransformer``. What differs is
what they hold: the linear-classification checkpoint (main_lincls.py, ``{'state_dict':
{'module.<key>'}}``) and DeiT-format files are the plain classifier, or its encoder alone
(convert_to_deit.py drops ``head``); the pre-training checkpoint (main_moco.py) holds the whole
MoCo module, of which only ``base_encoder`` is the model, and its classifier slot holds the
projection MLP, which is no classifier: a linear classifier must come from elsewhere (``--head``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path

import torch
from torch import nn

from alignbench.errors import ModelError
from alignbench.models._origins import MOCO_V3

# Entries of training checkpoints that hold the state_dict, most wanted first: the paper evaluates
# EMA weights (timm's train.py saves `state_dict_ema`, ConvNeXt's `model_ema`).
_CONTAINER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def read_state_dict(path: Path, key: str | None = None, *, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict in a safetensors or torch file (``key``: the entry holding it, if any).

    ``trusted`` (the registry's published files, sha256-recorded) allows full unpickling for old
    checkpoints that pickle more than tensors; other files load with ``weights_only``.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as error:  # safetensors raises its own error types
            raise ModelError(f"cannot read {path} as safetensors ({error}); is it corrupt?") from None
    try:
        # timm's train.py pickles its argparse.Namespace next to the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        pickled_objects = "weights_only" in str(error).lower() or "unpickl" in str(error).lower()
        if not (trusted and pickled_objects):
            raise ModelError(_unreadable(path, error)) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    return _unwrap(obj, key, path)


_EXPECTED = (
    "alignbench reads a state_dict saved with torch.save(model.state_dict(), PATH) or safetensors, "
    "or a training checkpoint holding one (under state_dict_ema, model_ema, state_dict or model)"
)
_PICKLED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _unreadable(path: Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, as the user can act on it. PyTorch's own
    text advises ``weights_only=False``, which would run arbitrary code from the file: never repeated."""
    pickled = _PICKLED_GLOBAL.search(str(error))
    if pickled:
        return (
            f"checkpoint {path} pickles a Python object ({pickled.group(1)}), not only tensors (e.g. a whole model "
            f"saved with torch.save(model)), which alignbench does not unpickle; {_EXPECTED}"
        )
    return f"{path} is not a checkpoint alignbench can read (neither a PyTorch file of tensors nor safetensors); {_EXPECTED}"


# alignbench's entry in a safetensors header. One entry holding canonical JSON: safetensors keeps the
# metadata in a hash map whose order changes from process to process, so two entries would give the
# same weights different bytes — and a different sha256 fingerprint — each time they are saved.
METADATA_KEY = "alignbench"


def metadata_header(values: Mapping[str, str]) -> dict[str, str]:
    return {METADATA_KEY: json.dumps(dict(values), sort_keys=True, separators=(",", ":"))}


def read_metadata(path: Path) -> dict[str, str]:
    """What alignbench wrote into a safetensors file (empty for other files): e.g. how its head pools."""
    if Path(path).suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
        return dict(json.loads(header[METADATA_KEY])) if METADATA_KEY in header else {}
    except Exception as error:  # safetensors raises its own error types
        raise ModelError(f"cannot read {path} as safetensors ({error}); is it corrupt?") from None


def _unwrap(obj: object, key: str | None, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and key is not None and key in obj:
        obj = obj[key]
    elif isinstance(obj, Mapping) and not _is_state_dict(obj):
        for candidate in _CONTAINER_KEYS:
            if isinstance(obj.get(candidate), Mapping):
                obj = obj[candidate]
                break
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise ModelError(
            f"{path} holds no state_dict (expected tensors, or one under {'/'.join(_CONTAINER_KEYS)}); pass a checkpoint of model weights"
        )
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    # DataParallel / DistributedDataParallel prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and any(isinstance(v, torch.Tensor) for v in obj.values())


def filter_for(model: nn.Module):
    """timm's ``checkpoint_filter_fn`` of the model's architecture module, if it has one."""
    return getattr(import_module(type(model).__module__), "checkpoint_filter_fn", None)


def remap(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with keys of ``model``: as is when they already match, else through timm's filter."""
    expected = model.state_dict()
    if _fits_keys(state, expected):
        return state
    filter_fn = filter_for(model)
    if filter_fn is None:
        return state
    try:
        return dict(filter_fn(dict(state), model))
    except (KeyError, RuntimeError, ValueError, AttributeError):
        # Keys of neither layout: leave them as they are, so check_fits names the first mismatches.
        return state


def _fits_keys(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> bool:
    wanted = {k for k in expected if not k.endswith("num_batches_tracked")}
    return wanted <= set(state)


def check_fits(state: Mapping[str, torch.Tensor], model: nn.Module, what: str) -> None:
    """Raise a ModelError listing the first missing, unexpected and mis-shaped keys, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise ModelError(f"checkpoint does not fit {what}: {'; '.join(problems)}")


def check_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    """ModelError naming the tensors that hold NaN or ±inf: such weights give NaN logits and maps
    (an argmax of NaN is class 0), so nothing computed from them could be scored."""
    bad = [key for key, value in state.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        floating = sum(1 for value in state.values() if value.is_floating_point())
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ModelError(
            f"{what}: {len(bad)} of {floating} tensors hold NaN or ±inf values ({bad[0]}{more}); "
            "the training that wrote it diverged: use an earlier checkpoint"
        )


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Strictly load ``state`` (already remapped) into ``model``, after checking keys, shapes and that every value is finite."""
    check_fits(state, model, what)
    check_finite(state, what)
    full = dict(state)
    for key, value in model.state_dict().items():  # old checkpoints lack BN step counters
        full.setdefault(key, value)
    model.load_state_dict(full, strict=True)


def load_by_order(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load a state_dict whose keys differ from the model's but come in the same order.

    Every pair is checked: same shape and the same kind of entry (weight, bias, running_mean, ...),
    so a layer that is missing or extra on either side cannot slip through.
    """
    expected = list(model.state_dict().items())
    given = list(state.items())
    if len(given) != len(expected):
        raise ModelError(f"{what} has {len(given)} tensors, the model {len(expected)}; wrong file?")
    mapped = {}
    for (name, value), (key, target) in zip(given, expected):
        if value.shape != target.shape or name.rsplit(".", 1)[-1] != key.rsplit(".", 1)[-1]:
            raise ModelError(f"{what}: {name} {tuple(value.shape)} does not match {key} {tuple(target.shape)}; wrong file for this model?")
        mapped[key] = value
    model.load_state_dict(mapped, strict=True)


def dcls_conv_names(state: Mapping[str, torch.Tensor]) -> set[str]:
    """The convs a checkpoint made DCLS: the modules of its ``.P`` keys."""
    return {key.removesuffix(".P") for key in state if key.endswith(".P")}


# ------------------------------------------------------------------------------------ MoCo v3


def moco_v3_base_encoder(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The ``base_encoder`` of a MoCo v3 pre-training checkpoint (moco/builder.py's MoCo module:
    base_encoder, momentum_encoder, predictor), prefix removed; None for any other layout."""
    if not any(k.startswith("base_encoder.") for k in state):
        return None
    if not any(k.startswith(("momentum_encoder.", "predictor.")) for k in state):
        return None
    return {k.removeprefix("base_encoder."): v for k, v in state.items() if k.startswith("base_encoder.")}


def moco_v3_position_embedding(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """[1, 1 + h·w, dim]: the fixed 2-D sin-cos position embedding of MoCo v3's ViTs, transcribed from
    ``VisionTransformerMoCo.build_2d_sincos_position_embedding`` (moco-v3 vits.py; temperature 1e4,
    ``meshgrid(grid_w, grid_h)`` in its default 'ij' order, a zero row for the class token)."""
    h, w = grid
    grid_w, grid_h = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij")
    pos_dim = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
    out_w = torch.einsum("m,d->md", grid_w.flatten(), omega)
    out_h = torch.einsum("m,d->md", grid_h.flatten(), omega)
    embedding = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), embedding])[None]


def _is_moco_v3_position_embedding(pos_embed: torch.Tensor) -> bool:
    # MoCo v3 freezes this embedding (requires_grad=False), so every checkpoint of its ViTs
    # (pre-training, linear classification, convert_to_deit.py) holds it unchanged.
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[2] % 4:
        return False
    side = round((pos_embed.shape[1] - 1) ** 0.5)
    if side * side != pos_embed.shape[1] - 1:
        return False
    expected = moco_v3_position_embedding((side, side), pos_embed.shape[2])
    return torch.allclose(pos_embed.float(), expected, atol=1e-5, rtol=0)


def detect_origin(state: Mapping[str, torch.Tensor]) -> str | None:
    """The training code base a checkpoint comes from, where its contents say so (``_origins``)."""
    if moco_v3_base_encoder(state) is not None:
        return MOCO_V3
    pos_embed = state.get("pos_embed")
    if isinstance(pos_embed, torch.Tensor) and _is_moco_v3_position_embedding(pos_embed):
        return MOCO_V3
    return None


def classifier_name(model: nn.Module) -> str | None:
    """The module holding the model's classifier in timm's pretrained config (resnet: fc, ViT: head)."""
    config = getattr(model, "pretrained_cfg", None) or {}
    return config.get("classifier") or None


def _under(key: str, module: str) -> bool:
    return key == module or key.startswith(module + ".")


def _without(state: Mapping[str, torch.Tensor], module: str | None) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if module is None or not _under(k, module)}


def read_head(path: Path, classifier: str) -> dict[str, torch.Tensor]:
    """A linear classifier as ``{classifier}.weight`` / ``.bias``: from a plain ``{'weight', 'bias'}``
    file, or the classifier of a linear-probe checkpoint (MoCo v3 main_lincls.py: ``fc`` for a
    ResNet, ``head`` for a ViT)."""
    state = read_state_dict(path)
    for prefix in ("", f"{classifier}."):
        weight, bias = state.get(prefix + "weight"), state.get(prefix + "bias")
        if weight is not None and bias is not None and weight.ndim == 2 and bias.ndim == 1:
            return {f"{classifier}.weight": weight, f"{classifier}.bias": bias}
    raise ModelError(
        f"--head {path} holds no linear classifier (looked for 'weight'/'bias' and '{classifier}.weight'/"
        f"'{classifier}.bias'); pass a linear-probe checkpoint of this architecture or a {{'weight', 'bias'}} file"
    )


def load_checkpoint(
    model: nn.Module, state: Mapping[str, torch.Tensor], what: str, *, source: Path, head: Path | None = None
) -> str | None:
    """Load a dense checkpoint of any layout above into ``model``; returns its detected origin.

    ``head`` replaces the classifier (and is required when the checkpoint has none). A checkpoint
    for another architecture is refused naming its first mismatching keys, before a missing head is.
    """
    origin = detect_origin(state)
    classifier = classifier_name(model)
    encoder = moco_v3_base_encoder(state)
    if encoder is not None:
        # MoCo_ResNet / MoCo_ViT put the projection MLP where the classifier was (fc / head)
        state = _without(encoder, classifier)
    if head is not None:
        if classifier is None:
            raise ModelError(f"--head: {what} names no classifier module in its timm config, so there is no slot for it")
        state = {**_without(state, classifier), **read_head(head, classifier)}
    if classifier is not None and not any(_under(k, classifier) for k in state):
        own_head = {k: v for k, v in model.state_dict().items() if _under(k, classifier)}
        _check_backbone(remap({**state, **own_head}, model), model, what, origin)
        kind = (
            f"a MoCo v3 pre-training checkpoint: its projection head ({classifier}.*) is not a classifier"
            if encoder is not None
            else f"an encoder without a classifier (no {classifier}.* keys)"
        )
        raise ModelError(f"{source} is {kind}; pass --head PATH (a linear-probe checkpoint or a {{'weight', 'bias'}} file) to explain it")
    state = remap(state, model)
    _check_backbone(state, model, what, origin)
    load_into(model, state, what)
    return origin


def _check_backbone(state: Mapping[str, torch.Tensor], model: nn.Module, what: str, origin: str | None) -> None:
    try:
        check_fits(state, model, what)
    except ModelError as error:
        if origin is None:
            raise
        raise ModelError(f"{error.message} — a {origin} checkpoint of another architecture?") from None

"""Reading checkpoints and fitting them onto timm models (original-repository key names remapped).

The published DCLS checkpoints use the original repositories' layouts (facebookresearch ConvNeXt,
sail-sg metaformer, apple ml-fastvit). timm ships a ``checkpoint_filter_fn`` beside each of those
architectures that renames such keys to its own; applied to the model *after* conversion, it maps
the DCLS ``.P``/``.SIG`` keys too, since they ride on the same module paths.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path

import torch
from torch import nn

from alignbench.errors import ModelError

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
            raise ModelError(
                f"cannot read checkpoint {path} ({str(error).splitlines()[0]}); "
                "pass a torch or safetensors file holding a state_dict"
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    return _unwrap(obj, key, path)


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
            f"{path} holds no state_dict (expected tensors, or one under "
            f"{'/'.join(_CONTAINER_KEYS)}); pass a checkpoint of model weights"
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
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise ModelError(f"checkpoint does not fit {what}: {'; '.join(problems)}")


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Strictly load ``state`` (already remapped) into ``model``, after checking keys and shapes."""
    check_fits(state, model, what)
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
            raise ModelError(
                f"{what}: {name} {tuple(value.shape)} does not match {key} {tuple(target.shape)}; "
                "wrong file for this model?"
            )
        mapped[key] = value
    model.load_state_dict(mapped, strict=True)


def dcls_conv_names(state: Mapping[str, torch.Tensor]) -> set[str]:
    """The convs a checkpoint made DCLS: the modules of its ``.P`` keys."""
    return {key.removesuffix(".P") for key in state if key.endswith(".P")}

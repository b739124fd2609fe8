"""Models: build a registry (or any timm) model with its dense or DCLS weights.

Importing this package does not import torch: ``model_identity`` (what weights a model will have,
and their fingerprint) and ``resolve_device`` answer without it, so a cached ``score`` stays fast.
``load_model``, ``convert_model``, ``catalog`` and the conversion helpers load torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignbench._utils.lazy import lazy_attributes

__all__ = [
    "CAStreamModel",
    "CatalogRow",
    "ConversionReport",
    "ConversionResult",
    "ModelIdentity",
    "ModelInfo",
    "ModelRequest",
    "catalog",
    "check_device_name",
    "clamp_positions",
    "convert_model",
    "dcls_implementation",
    "load_model",
    "model_identity",
    "resolve_device",
    "save_state_dict",
    "save_stream",
    "set_global_pool",
    "swap_modules",
]

# public name -> private module that defines it, loaded on first use: the first five are torch-free
# (so is ``models.specs``, which a listing of runs imports without wanting these), the rest import torch
_LAZY = {
    "check_device_name": "alignbench.models._device",
    "resolve_device": "alignbench.models._device",
    "ModelIdentity": "alignbench.models._identity",
    "ModelRequest": "alignbench.models._identity",
    "model_identity": "alignbench.models._identity",
    "load_model": "alignbench.models._load",
    "convert_model": "alignbench.models._load",
    "ConversionReport": "alignbench.models._load",
    "ConversionResult": "alignbench.models._load",
    "ModelInfo": "alignbench.models._load",
    "catalog": "alignbench.models._catalog",
    "CatalogRow": "alignbench.models._catalog",
    "swap_modules": "alignbench.models._dcls",
    "save_state_dict": "alignbench.models._load",
    "set_global_pool": "alignbench.models._pooling",
    "clamp_positions": "alignbench.models._dcls",
    "dcls_implementation": "alignbench.models._dcls",
    "CAStreamModel": "alignbench.models._ca_stream",
    "save_stream": "alignbench.models._load",
}

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.models._ca_stream import CAStreamModel
    from alignbench.models._catalog import CatalogRow, catalog
    from alignbench.models._dcls import clamp_positions, dcls_implementation, swap_modules
    from alignbench.models._device import check_device_name, resolve_device
    from alignbench.models._identity import ModelIdentity, ModelRequest, model_identity
    from alignbench.models._load import (
        ConversionReport,
        ConversionResult,
        ModelInfo,
        convert_model,
        load_model,
        save_state_dict,
        save_stream,
    )
    from alignbench.models._pooling import set_global_pool


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

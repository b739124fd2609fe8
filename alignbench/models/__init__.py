"""Models: build a registry (or any timm) model with its dense or DCLS weights.

Importing this package does not import torch: ``model_identity`` (what weights a model will have,
and their fingerprint) and ``resolve_device`` answer without it, so a cached ``score`` stays fast.
``load_model``, ``convert_model``, ``catalog`` and the conversion helpers load torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignbench._lazy import lazy_attributes
from alignbench.models._device import resolve_device
from alignbench.models._identity import ModelIdentity, ModelRequest, model_identity

__all__ = [
    "CAStreamModel",
    "CatalogRow",
    "ConversionReport",
    "ConversionResult",
    "ModelIdentity",
    "ModelInfo",
    "ModelRequest",
    "catalog",
    "convert_model",
    "load_model",
    "model_identity",
    "resolve_device",
    "save_stream",
    "swap_modules",
]

# public name -> private module that defines it (imports torch; loaded on first use)
_LAZY = {
    "load_model": "alignbench.models._load",
    "convert_model": "alignbench.models._load",
    "ConversionReport": "alignbench.models._load",
    "ConversionResult": "alignbench.models._load",
    "ModelInfo": "alignbench.models._load",
    "catalog": "alignbench.models._catalog",
    "CatalogRow": "alignbench.models._catalog",
    "swap_modules": "alignbench.models._dcls",
    "CAStreamModel": "alignbench.models._ca_stream",
    "save_stream": "alignbench.models._load",
}

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.models._ca_stream import CAStreamModel
    from alignbench.models._catalog import CatalogRow, catalog
    from alignbench.models._dcls import swap_modules
    from alignbench.models._load import ConversionReport, ConversionResult, ModelInfo, convert_model, load_model, save_stream


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

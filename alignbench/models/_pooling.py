"""The head's global pooling: average (timm's default) or max, the latter being the global max pooling
variant of Grad-CAM consistency training (Pillai & Pirsiavash, AAAI 2021, ``--maxpool``).

A checkpoint trained with max pooling says so in its safetensors metadata (``POOLING_METADATA_KEY``),
and ``load_model`` pools that way when it reads such a file: the pooling is part of what the weights
were trained for, so scoring the file with ``--checkpoint`` cannot silently pool the other way.
"""

from __future__ import annotations

from timm.layers import SelectAdaptivePool2d
from torch import nn

from alignbench.errors import ModelError
from alignbench.models._dcls import swap_modules

POOLING_METADATA_KEY = "global_pool"  # in the checkpoint's alignbench metadata (_checkpoint.METADATA_KEY)
POOL_TYPES = ("avg", "max")


def set_global_pool(model: nn.Module, pool_type: str) -> int:
    """Make every global pooling of ``model``'s head ``pool_type`` (avg or max), in place; returns how many.

    timm heads pool with ``SelectAdaptivePool2d``; only its plain NCHW form (not the "fast" NHWC one)
    is swapped, keeping its flattening, so the classifier sees the same shape.
    """
    if pool_type not in POOL_TYPES:
        raise ModelError(f"unknown global pooling {pool_type!r}; use one of {', '.join(POOL_TYPES)}")

    def is_pool(_name: str, module: nn.Module) -> bool:
        return isinstance(module, SelectAdaptivePool2d) and not module.is_identity()

    def rebuild(name: str, old: SelectAdaptivePool2d) -> nn.Module:
        if str(old.pool_type).lower().startswith("fast") or not isinstance(old.pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            raise ModelError(f"{name} pools with {old.pool_type!r}; global max pooling needs timm's plain avg/max pooling head")
        return SelectAdaptivePool2d(output_size=1, pool_type=pool_type, flatten=isinstance(old.flatten, nn.Flatten))

    swapped = swap_modules(model, is_pool, rebuild)
    if not swapped:
        raise ModelError(f"{type(model).__name__} has no timm global pooling layer (SelectAdaptivePool2d) to make {pool_type}")
    return len(swapped)

"""The forward pass's precision: ``fp32`` (default), ``bf16`` or ``fp16`` through ``torch.autocast``.

Only model forward passes run under autocast: the features and the classifier head of the
explanation (``explainers/_split.py``), and the forward passes of the faithfulness metrics. A, its
gradient, the maps, Spearman and every other metric are float32/float64, and gradients are taken
outside the autocast region, as torch's AMP guide prescribes for backward passes. The precision is
part of a run's key unless it is fp32, so runs stored before it existed keep their keys.
Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

from alignbench.errors import AlignbenchError

PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_PRECISION = "fp32"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise AlignbenchError(f"unknown --precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
    return precision


def forward_autocast(device: Any, precision: str = DEFAULT_PRECISION) -> AbstractContextManager[Any]:
    """``torch.autocast`` on ``device``'s type at ``precision``; fp32: no autocast at all (a null context),
    so the fp32 path is exactly what it was before precision existed."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)

"""``--device auto|cpu|cuda`` → a torch device string (torch is imported only to ask about CUDA)."""

from __future__ import annotations

import re

from alignbench.errors import ModelError

_DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(name: str) -> None:
    """ModelError unless ``name`` is one of cpu, cuda, cuda:N or auto (torch-free: a cached answer
    checks its options too, without importing torch)."""
    if not isinstance(name, str) or not _DEVICE_NAME.match(name):
        raise ModelError(f"unknown device {name!r}; use cpu, cuda (or cuda:N) or auto")


def resolve_device(name: str = "auto") -> str:
    """``auto`` → cuda when available, else cpu; ``cuda`` (or ``cuda:N``) without a GPU is an error."""
    check_device_name(name)
    if name == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ModelError(f"--device {name} but CUDA is not available here; use --device cpu or auto")
    return name

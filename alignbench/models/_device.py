"""``--device auto|cpu|cuda`` → a torch device string (torch is imported only to ask about CUDA)."""

from __future__ import annotations

from alignbench.errors import ModelError


def resolve_device(name: str = "auto") -> str:
    """``auto`` → cuda when available, else cpu; ``cuda`` (or ``cuda:N``) without a GPU is an error."""
    if name == "cpu":
        return "cpu"
    if name not in ("auto", "cuda") and not name.startswith("cuda:"):
        raise ModelError(f"unknown device {name!r}; use cpu, cuda or auto")
    import torch

    available = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ModelError(f"--device {name} but CUDA is not available here; use --device cpu or auto")
    return name

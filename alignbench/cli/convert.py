"""`alignbench convert`."""

from __future__ import annotations

from alignbench.cli._errors import guarded
from alignbench.errors import NotImplementedYet


@guarded
def convert() -> None:
    """Replace a model's convolutions by DCLS per its recipe and write a checkpoint.

    Example: [bold]alignbench convert convnext_tiny --dcls --init from-dense --out convnext_tiny_dcls.safetensors[/]
    """
    raise NotImplementedYet("`alignbench convert` is not implemented yet")

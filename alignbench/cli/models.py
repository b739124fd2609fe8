"""`alignbench models`."""

from __future__ import annotations

from alignbench.cli._errors import guarded
from alignbench.errors import NotImplementedYet


@guarded
def models() -> None:
    """List the model registry: families, DCLS recipes, weight sources, offline availability.

    Example: [bold]alignbench models --json[/]
    """
    raise NotImplementedYet("`alignbench models` is not implemented yet")

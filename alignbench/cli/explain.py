"""`alignbench explain`."""

from __future__ import annotations

from alignbench.cli._errors import guarded
from alignbench.errors import NotImplementedYet


@guarded
def explain() -> None:
    """Compute heatmaps for images and write DIR/<stem>.npy and DIR/<stem>.png overlays.

    Example: [bold]alignbench explain efficientnet_lite0 cat.jpg dog.jpg --out maps/[/]
    """
    raise NotImplementedYet("`alignbench explain` is not implemented yet")

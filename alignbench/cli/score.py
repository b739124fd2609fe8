"""`alignbench score`."""

from __future__ import annotations

from alignbench.cli._errors import guarded
from alignbench.errors import NotImplementedYet


@guarded
def score() -> None:
    """Explain every image of a dataset, score it against the human maps, store and summarise.

    Example: [bold]alignbench score resnet50 --dcls --explainer threshold --dataset clickme-val[/]
    """
    raise NotImplementedYet("`alignbench score` is not implemented yet")

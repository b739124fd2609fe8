"""`alignbench compare`."""

from __future__ import annotations

from alignbench.cli._errors import guarded
from alignbench.errors import NotImplementedYet


@guarded
def compare() -> None:
    """DCLS vs baseline per architecture, with confidence intervals and rankings, from the store.

    Example: [bold]alignbench compare --explainer threshold-gradcam --dataset clickme-val[/]
    """
    raise NotImplementedYet("`alignbench compare` is not implemented yet")

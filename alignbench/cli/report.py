"""`alignbench report`."""

from __future__ import annotations

from alignbench.cli._errors import guarded
from alignbench.errors import NotImplementedYet


@guarded
def report() -> None:
    """Tables and terminal plots of everything stored; CSV/JSON/Markdown/PNG exports.

    Example: [bold]alignbench report --csv results.csv[/]
    """
    raise NotImplementedYet("`alignbench report` is not implemented yet")

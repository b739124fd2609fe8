"""Options that need no registry, defined once as ``Annotated`` aliases: the store, the output, the
device, and the run filter of ``compare`` and ``report``.

Commands that only read the store (``runs``, ``upgrade``, ``compare``, ``report``) import this module
rather than ``_options``, which reads the model, explainer and dataset registries for its help texts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover - the analysis modules import numpy: loaded only when a command runs
    from alignbench.analysis.runs import RunFilter

Device = Annotated[str, typer.Option("--device", help="cpu, cuda or auto (cuda when available).")]
Db = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        help="Results store URL (any SQLAlchemy URL). Default: $ALIGNBENCH_DB, else sqlite:///alignbench.db.",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]

# The run filter (RunFilter's fields) of compare and report; `run_filter` makes the RunFilter.
ExplainerFilter = Annotated[
    Optional[str], typer.Option("--explainer", help="Only this explainer (name or alias, e.g. threshold).", show_default=False)
]
DatasetFilter = Annotated[Optional[str], typer.Option("--dataset", help="Only this dataset (e.g. clickme-val).", show_default=False)]
ProtocolFilter = Annotated[Optional[str], typer.Option("--protocol", help="Only this protocol: aligned or paper.", show_default=False)]
Metric = Annotated[str, typer.Option("--metric", help="The per-image metric (spearman, or another stored metric).")]
RunId = Annotated[Optional[int], typer.Option("--run", help="Report on this run only (ids: the `run` column).", show_default=False)]
ShowAll = Annotated[
    bool, typer.Option("--all", help="Also show runs with no stored row (stopped before their first batch; hidden by default).")
]


def run_filter(
    explainer: Optional[str] = None,
    dataset: Optional[str] = None,
    protocol: Optional[str] = None,
    metric: str = "spearman",
    run: Optional[int] = None,
    show_all: bool = False,
) -> RunFilter:
    """The ``RunFilter`` of a command's run filter options (the one place they become a filter)."""
    from alignbench.analysis.runs import RunFilter

    return RunFilter(explainer=explainer, dataset=dataset, protocol=protocol, metric=metric, run_id=run, include_empty=show_all)

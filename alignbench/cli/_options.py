"""Options shared by several commands, defined once as ``Annotated`` aliases (typer docs_src/one_file_per_command)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from alignbench._precision import PRECISIONS
from alignbench.datasets import DATASETS, PROTOCOLS
from alignbench.explainers import METHODS

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.models import ModelRequest

# Choices are read from the registries (never a second hand-written list) and validated by the
# library, whose errors are one line; Typer's Enum choices would print a multi-line box instead.

ModelName = Annotated[str, typer.Argument(help="Registry name (see `alignbench models`) or any timm model name.", show_default=False)]
OptionalModelName = Annotated[
    Optional[str],
    typer.Argument(help="Registry name or timm model name; omitted: the embedded default (efficientnet_lite0).", show_default=False),
]
Dcls = Annotated[bool, typer.Option("--dcls", help="Use the model with its convolutions replaced by DCLS (per the registry recipe).")]
Checkpoint = Annotated[
    Optional[Path],
    typer.Option(
        "--checkpoint",
        help="A state_dict for the timm model (after conversion when --dcls); original-repository checkpoints are remapped.",
        exists=False,
        dir_okay=False,
        show_default=False,
    ),
]
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
Precision = Annotated[
    str,
    typer.Option("--precision", help=f"Forward passes in {', '.join(PRECISIONS)} (autocast; maps and metrics stay float32). Part of the run key unless fp32."),
]
Explainer = Annotated[str, typer.Option("--explainer", help=f"Explanation method: {', '.join(METHODS)} (aliases: threshold, ...).")]
Dataset = Annotated[str, typer.Option("--dataset", help=f"Dataset: {', '.join(DATASETS)}.")]
Protocol = Annotated[
    str, typer.Option("--protocol", help=f"{' or '.join(PROTOCOLS)}: aligned = heatmap and input share one geometry; paper = the published pipeline.")
]


def model_request(name: str, *, dcls: bool = False, checkpoint: Optional[Path] = None, **options) -> "ModelRequest":
    """The ``ModelRequest`` of a command's model options (the one place they become a request)."""
    from alignbench.models import ModelRequest

    return ModelRequest(name, dcls=dcls, checkpoint=checkpoint, **options)

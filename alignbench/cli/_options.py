"""Options shared by several commands, defined once as ``Annotated`` aliases (typer docs_src/one_file_per_command)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from alignbench._precision import PRECISIONS
from alignbench.datasets import DATASETS, PROTOCOLS
from alignbench.explainers import HEAD_FUSIONS, METHODS

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
Head = Annotated[
    Optional[Path],
    typer.Option(
        "--head",
        help="The linear classifier of an encoder-only --checkpoint (a MoCo v3 pre-training checkpoint): "
        "a linear-probe checkpoint or a {'weight', 'bias'} file.",
        exists=False,
        dir_okay=False,
        show_default=False,
    ),
]
Tag = Annotated[
    Optional[str],
    typer.Option(
        "--tag",
        help="A name for the model in the store; --tag moco-v3 also declares a --checkpoint's origin "
        "(its eval transform) where the file does not show it.",
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
Layer = Annotated[
    Optional[int],
    typer.Option(
        "--layer",
        help="raw-attention: the block whose attention is shown, 0 the first, negative from the end (default -1: the last).",
        show_default=False,
    ),
]
HeadFusion = Annotated[
    Optional[str],
    typer.Option(
        "--head-fusion",
        help=f"rollout / raw-attention: how the heads' attention is fused, {' | '.join(HEAD_FUSIONS)} (default mean).",
        show_default=False,
    ),
]
DiscardRatio = Annotated[
    Optional[float],
    typer.Option(
        "--discard-ratio",
        help="rollout: the fraction in [0, 1) of each fused attention matrix's lowest entries set to zero (vit-explain; default 0).",
        show_default=False,
    ),
]
Dataset = Annotated[str, typer.Option("--dataset", help=f"Dataset: {', '.join(DATASETS)}.")]
Protocol = Annotated[
    str, typer.Option("--protocol", help=f"{' or '.join(PROTOCOLS)}: aligned = heatmap and input share one geometry; paper = the published pipeline.")
]


def model_request(name: str, *, dcls: bool = False, checkpoint: Optional[Path] = None, **options) -> "ModelRequest":
    """The ``ModelRequest`` of a command's model options (the one place they become a request)."""
    from alignbench.models import ModelRequest

    return ModelRequest(name, dcls=dcls, checkpoint=checkpoint, **options)


def explainer_params(**options) -> dict:
    """The explainer parameters a command was given (``threshold=..., layer=...``): options not passed
    (None) are left out, so the method's defaults apply and the library refuses those it does not take."""
    return {name: value for name, value in options.items() if value is not None}

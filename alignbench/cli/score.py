"""`alignbench score`: parse options, call alignbench.scoring.score, print the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from alignbench.cli import _options as o
from alignbench.cli._errors import guarded, stdout_console
from alignbench.metrics import METRICS
from alignbench.errors import ModelError
from alignbench.scoring import DEFAULT_MODEL, ScoreRequest, ScoreResult, parse_metrics, trained_request
from alignbench.scoring import score as run_score


class _Rate(TextColumn):
    """images/s over the images computed so far."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:6.1f} img/s" if speed else "   -- img/s", style="progress.data.speed")


def _summary_table(result: ScoreResult) -> Table:
    table = Table(title=f"run {result.run_id}" + (" (cached: read from the store)" if result.cached else ""), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    params = ", ".join(f"{k}={v}" for k, v in sorted(result.explainer_params.items()))
    rows = [
        ("model", f"{result.model}{' + DCLS' if result.dcls else ''}{' + CA-Stream' if result.ca_stream else ''}"),
        ("weights", result.weights_source),
        ("explainer", f"{result.explainer}" + (f" ({params})" if params else "")),
        ("dataset / protocol", f"{result.dataset} / {result.protocol}"),
        ("images", f"{result.n_images} ({result.n_scored} scored, {result.n_skipped} skipped)"),
    ]
    for metric, value in result.metrics.items():
        rows.append((f"mean {metric}", "n/a" if value is None else f"{value:.4f}"))
    if result.alignment_score is not None:
        rows.append(("alignment score", f"{result.alignment_score:.4f}  (mean spearman / human ceiling)"))
    if not result.cached:
        rate = result.computed_images / result.seconds if result.seconds else 0.0
        rows.append(("computed", f"{result.computed_images} images in {result.seconds:.1f} s ({rate:.1f} img/s, {result.device})"))
    rows.append(("status", result.status))
    for key, value in rows:
        table.add_row(key, value)
    return table


@guarded
def score(
    model: o.OptionalModelName = None,
    dcls: o.Dcls = False,
    checkpoint: o.Checkpoint = None,
    head: o.Head = None,
    tag: o.Tag = None,
    ca_stream: o.CaStream = False,
    backbone_checkpoint: o.BackboneCheckpoint = None,
    trained: Annotated[
        Optional[str], typer.Option("--trained", help="A model `alignbench train` made, by its tag (see `alignbench models --trained`).", show_default=False)
    ] = None,
    explainer: o.Explainer = "threshold-gradcam",
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Threshold-Grad-CAM floor (default 0.3).", show_default=False)] = None,
    layer: o.Layer = None,
    head_fusion: o.HeadFusion = None,
    discard_ratio: o.DiscardRatio = None,
    dataset: o.Dataset = "sample",
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Dataset files (ClickMe shards, folder, ImageNet val JPEGs).", show_default=False)] = None,
    protocol: o.Protocol = "aligned",
    metric: Annotated[str, typer.Option("--metric", help=f"Metric or comma-separated metrics: {', '.join(METRICS)}.")] = "spearman",
    steps: Annotated[
        Optional[int], typer.Option("--steps", help="Steps of the deletion/insertion curves (default 224, RISE).", show_default=False)
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Score only the first N images.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward/backward pass.")] = 16,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes, 0 (the main process) to the number of cores (default: cores - 1).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even if the run is stored (rows are replaced as they are recomputed).")] = False,
    device: o.Device = "auto",
    db: o.Db = None,
    as_json: o.Json = False,
) -> None:
    """Explain every image of a dataset, score it against the human maps, store and summarise.

    With no MODEL, the embedded default: efficientnet_lite0 (real ImageNet weights) on the `sample` dataset, offline.
    The same command twice computes once; an interrupted run resumes.

    Example: [bold]alignbench score resnet50 --dcls --explainer threshold --dataset clickme-val --data-dir shards/[/]
    """
    if trained is not None:
        chosen = trained_request(trained, db)
        if dcls or ca_stream or checkpoint is not None or backbone_checkpoint is not None or head is not None or (
            model is not None and model != chosen.name
        ):
            raise ModelError(f"--trained {trained} is {chosen.name}{' --dcls' if chosen.dcls else ''} with its own checkpoint; give --trained alone")
    else:
        chosen = o.model_request(model or DEFAULT_MODEL, dcls=dcls, checkpoint=checkpoint, head=head, tag=tag, ca_stream=ca_stream,
                                 backbone_checkpoint=backbone_checkpoint)
    request = ScoreRequest(
        model=chosen,
        explainer=explainer,
        explainer_params=o.explainer_params(threshold=threshold, layer=layer, head_fusion=head_fusion, discard_ratio=discard_ratio),
        dataset=dataset,
        data_dir=data_dir,
        protocol=protocol,
        metrics=parse_metrics(metric),
        metric_params={} if steps is None else {"deletion": {"steps": steps}, "insertion": {"steps": steps}},
        limit=limit,
        batch_size=batch_size,
        force=force,
        device=device,
        workers=workers,
    )
    progress = Progress(
        TextColumn("[bold]scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
        disable=not sys.stderr.isatty(),
    )
    task = None

    def on_progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task("score", total=total)
        progress.update(task, completed=done, total=total)

    try:
        result = run_score(request, db=db, progress=on_progress)
    finally:
        progress.stop()
    if as_json:
        typer.echo(json.dumps(result.to_json(), default=str))
    else:
        stdout_console().print(_summary_table(result))

"""`alignbench score`: parse options, call alignbench.scoring.score, print the summary."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from alignbench.cli import _options as o
from alignbench.cli._errors import guarded, stdout_console
from alignbench.cli._format import number, summary_table
from alignbench.distributed import is_main_process
from alignbench.errors import AlignbenchError, ModelError
from alignbench.metrics import FIXATION_DEFAULT_METRICS, METRICS
from alignbench.models.specs import variant_name

if TYPE_CHECKING:  # pragma: no cover - the scoring modules import SQLAlchemy: loaded only when the command runs
    from alignbench.models import ModelRequest
    from alignbench.scoring import ScoreRequest, ScoreResult


class _Rate(TextColumn):
    """images/s over the images computed so far."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:6.1f} img/s" if speed else "   -- img/s", style="progress.data.speed")


def _summary_table(result: ScoreResult) -> Table:
    params = ", ".join(f"{k}={v}" for k, v in sorted(result.explainer_params.items()))
    rows = [
        ("model", variant_name(result.model, dcls=result.dcls, ca_stream=result.ca_stream)),
        ("weights", result.weights_source),
        ("explainer", f"{result.explainer}" + (f" ({params})" if params else "")),
        ("dataset / protocol", f"{result.dataset} / {result.protocol}"),
        ("images", f"{result.n_images} ({result.n_scored} scored, {result.n_skipped} skipped)"),
    ]
    for metric, value in result.metrics.items():
        rows.append((f"mean {metric}", number(value, missing="n/a")))
    if result.alignment_score is not None:
        rows.append(("alignment score", f"{result.alignment_score:.4f}  (mean spearman / human ceiling)"))
    if not result.cached:
        rate = result.computed_images / result.seconds if result.seconds else 0.0
        rows.append(("computed", f"{result.computed_images} images in {result.seconds:.1f} s ({rate:.1f} img/s, {result.device})"))
    rows.append(("status", result.status))
    return summary_table(f"run {result.run_id}" + (" (cached: read from the store)" if result.cached else ""), rows)


def scoring_progress(label: str = "scoring") -> tuple[Progress, Callable[[int, int], None]]:
    """A progress bar on stderr (only on a terminal, and only on torchrun's rank 0) and the callback
    ``score`` reports to. Each call of ``start_task`` in a study begins a new bar."""
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
        disable=not sys.stderr.isatty() or not is_main_process(),
    )
    tasks: list[Any] = []

    def on_progress(done: int, total: int) -> None:
        if done == 0 or not tasks:  # a new run
            if not tasks:
                progress.start()
            tasks.append(progress.add_task("score", total=total))
        progress.update(tasks[-1], completed=done, total=total)

    return progress, on_progress


@guarded
@o.with_explainer_options()
@o.with_model_options()
def score(
    models: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="MODEL",
            help="Registry name(s) or timm model names; several: one run each, then the comparison (the one-line form of a study). "
            "Omitted: the embedded default (efficientnet_lite0).",
            show_default=False,
        ),
    ] = None,
    model_options: dict = None,  # every model option (o.MODEL_OPTIONS)
    trained: Annotated[
        Optional[str],
        typer.Option(
            "--trained", help="A model `alignbench train` made, by its tag (see `alignbench models --trained`).", show_default=False
        ),
    ] = None,
    explainer: o.Explainer = "threshold-gradcam",
    explainer_options: dict = None,  # every explainer option (o.EXPLAINER_OPTIONS)
    dataset: o.Dataset = "sample",
    data_dir: o.DataDir = None,
    fixation_sigma: o.FixationSigma = None,
    protocol: o.Protocol = "aligned",
    metric: Annotated[
        Optional[str],
        typer.Option(
            "--metric",
            help=f"Metric or comma-separated metrics: {', '.join(METRICS)} (default: spearman; on a fixation dataset "
            f"{', '.join(FIXATION_DEFAULT_METRICS)}).",
            show_default=False,
        ),
    ] = None,
    steps: Annotated[
        Optional[int], typer.Option("--steps", help="Steps of the deletion/insertion curves (default 224, RISE).", show_default=False)
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Score only the first N images.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward/backward pass.")] = 16,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers",
            help="DataLoader worker processes, 0 (the main process) to the number of cores (default: cores - 1).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Recompute even if the run is stored (rows are replaced as they are recomputed).")
    ] = False,
    device: o.Device = "auto",
    precision: o.Precision = "fp32",
    retag: o.Retag = False,
    db: o.Db = None,
    as_json: o.Json = False,
) -> None:
    """Explain every image of a dataset, score it against the human maps, store and summarise.

    With no MODEL, the embedded default: efficientnet_lite0 (real ImageNet weights) on the `sample` dataset, offline.
    The same command twice computes once; an interrupted run resumes. Several models: each is scored in turn, then compared and ranked (as `alignbench study run` does for a whole grid). Under torchrun, the processes share every run's images.

    Example: [bold]alignbench score resnet50 --dcls --explainer threshold --dataset clickme-val --data-dir shards/[/]

    On 8 GPUs: [bold]torchrun --nproc_per_node 8 -m alignbench score resnet50 convnext_tiny --device cuda[/]
    """
    from alignbench.scoring import ScoreRequest, parse_metrics

    requests = [
        ScoreRequest(
            model=model_request,
            explainer=explainer,
            explainer_params=o.explainer_params(explainer, **explainer_options),
            dataset=dataset,
            data_dir=data_dir,
            fixation_sigma=fixation_sigma,
            protocol=protocol,
            metrics=None if metric is None else parse_metrics(metric),
            metric_params={} if steps is None else {"deletion": {"steps": steps}, "insertion": {"steps": steps}},
            limit=limit,
            batch_size=batch_size,
            force=force,
            device=device,
            workers=workers,
            precision=precision,
            retag=retag,
        )
        for model_request in _model_requests(list(dict.fromkeys(models or [])), trained, model_options, db)
    ]
    results, comparison = _run(requests, db)
    if is_main_process():  # under torchrun, rank 0 prints what the store holds once every rank is done
        _print_results(results, comparison, as_json)


def _model_requests(names: list[str], trained: str | None, model_options: dict, db: str | None) -> list[ModelRequest]:
    """The models to score: ``--trained TAG`` alone, or each name with the model options."""
    from alignbench.scoring import DEFAULT_MODEL, trained_request

    if trained is not None:
        request = trained_request(trained, db)
        if model_options["tag"] is not None:  # one more name for the trained model
            request = replace(request, tag=model_options["tag"])
        # every other model option is --trained's own
        given = [name for name, (_, default) in o.MODEL_OPTIONS.items() if name != "tag" and model_options[name] != default]
        if given or (names and names != [request.name]):
            raise ModelError(
                f"--trained {trained} is {request.name}{' --dcls' if request.dcls else ''} with its own checkpoint; give --trained alone"
            )
        return [request]
    names = names or [DEFAULT_MODEL]
    one_model = [
        f"--{name.replace('_', '-')}" for name in ("checkpoint", "head", "tag", "backbone_checkpoint") if model_options[name] is not None
    ]
    if one_model and len(names) > 1:
        raise AlignbenchError(f"{one_model[0]} belongs to one model; score {len(names)} models with a study file instead")
    return [o.model_request(name, **model_options) for name in names]


def _run(requests: list[ScoreRequest], db: str | None) -> tuple[list[ScoreResult], Any]:
    """Score one request, or several as a study (each in turn, then compared): the results and the comparison."""
    from alignbench.scoring import score as run_score

    progress, on_progress = scoring_progress()
    try:
        if len(requests) == 1:
            return [run_score(requests[0], db=db, progress=on_progress)], None
        from alignbench.analysis.compare import compare_results
        from alignbench.scoring.study import run_study

        done = run_study(requests, db=db, progress=on_progress, compare=lambda results: compare_results(results, db=db))
        return done.results, done.comparison
    finally:
        progress.stop()


def _print_results(results: list[ScoreResult], comparison, as_json: bool) -> None:
    if as_json:
        document = results[0].to_json() if len(results) == 1 else [result.to_json() for result in results]
        typer.echo(json.dumps(document, default=str))
        return
    console = stdout_console()
    for result in results:
        console.print(_summary_table(result))
    if comparison is not None:
        from alignbench.cli.compare import print_result

        console.print()
        print_result(comparison, console)

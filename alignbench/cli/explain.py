"""`alignbench explain`: parse options, call ``alignbench.explainers.explain_files``, print the table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from alignbench.cli._errors import err_console, guarded
from alignbench.cli._options import (
    Device,
    Explainer,
    ModelName,
    explainer_params,
    model_request,
    with_explainer_options,
    with_model_options,
)
from alignbench.explainers import DEFAULT_METHOD, explain_files

Images = Annotated[
    list[Path],
    typer.Argument(help="Image files, or directories (every image file in them).", show_default=False),
]
OutDir = Annotated[Path, typer.Option("--out", help="Directory for <stem>.npy (float32 map) and <stem>.png (overlay).")]
Target = Annotated[
    Optional[int],
    typer.Option("--target", help="Class index to explain for every image; default: each image's top-1 prediction.", show_default=False),
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")]


@guarded
@with_explainer_options()
@with_model_options()
def explain(
    model: ModelName,
    images: Images,
    out: OutDir,
    explainer: Explainer = DEFAULT_METHOD,
    target: Target = None,
    explainer_options: dict = None,  # every explainer option (EXPLAINER_OPTIONS)
    model_options: dict = None,  # every model option (MODEL_OPTIONS)
    device: Device = "auto",
    batch_size: BatchSize = 8,
) -> None:
    """Compute heatmaps for images and write DIR/<stem>.npy and DIR/<stem>.png overlays.

    Images go through the model's eval transform; the table gives each image's predicted class, its confidence and the class the map explains. Unreadable files are named and skipped.

    Example: [bold]alignbench explain efficientnet_lite0 cat.jpg dog.jpg --out maps/[/]
    """
    params = explainer_params(explainer, **explainer_options)
    result = explain_files(
        model_request(model, **model_options),
        images,
        out,
        method=explainer,
        params=params,
        target=target,
        device=device,
        batch_size=batch_size,
    )
    for path, why in result.skipped:
        err_console.print(f"skipped {path}: {why}", markup=False)
    setting = ", ".join(f"{k}={v}" for k, v in result.params.items())
    table = Table(title=f"{result.model} · {result.method}" + (f" ({setting})" if setting else ""))
    table.add_column("image", overflow="fold")
    table.add_column("predicted class")
    table.add_column("confidence", justify="right")
    table.add_column("target", justify="right")
    for row in result.files:
        target_text = f"{row.target}" if row.target == row.prediction else f"{row.target} {row.target_name}"
        table.add_row(row.source.name, f"{row.prediction} {row.prediction_name}", f"{row.confidence:.1%}", target_text)
    Console(soft_wrap=True).print(table)
    typer.echo(f"wrote {len(result.files)} map(s) and overlay(s) to {out}")

"""`alignbench convert`: parse options, call alignbench.models.convert_model, print the summary."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from alignbench.cli import _options as o
from alignbench.cli._errors import guarded
from alignbench.cli._format import summary_table
from alignbench.errors import ModelError


def _summary(result) -> Table:
    report = result.report
    recipe = report.recipe
    dense, dilated, growth = report.max_span_growth
    size = recipe["dilated_kernel_size"]
    change = report.params_after - report.params_before
    rows = [
        ("recipe", f"{recipe['version']}, {size}×{size}, {recipe['kernel_count']} elements, {recipe['selector']}"),
        ("init", report.init),
        ("weights from", result.source),
        ("layers replaced", f"{len(report.layers)} ({report.position_groups} shared position groups)"),
        ("parameters", f"{report.params_before:,} → {report.params_after:,} ({change:+,}, {100 * change / report.params_before:+.1f}%)"),
        (
            "max receptive-field growth",
            f"{dense}×{dense} → {dilated}×{dilated} per layer ({growth:.1f}× span); "
            f"elements now cover up to {report.max_effective_span} px",
        ),
    ]
    if report.kernel_error is not None:
        exact = report.kernel_error == 0.0
        rows.append(
            (
                "approximation",
                "exact: every dense tap kept" if exact else f"largest taps kept; max relative kernel error {report.kernel_error:.4f}",
            )
        )
    if result.logit_error is not None:
        rows.append(("max |Δlogit| vs dense", f"{result.logit_error:.2e} (2 seeded N(0,1) inputs)"))
    if result.out is not None:
        rows.append(("wrote", f"{result.out} (sha256 {result.sha256[:16]}…)"))
    else:
        rows.append(("wrote", "nothing (pass --out PATH to save the weights)"))
    if result.recorded_in:
        rows.append(("recorded", f"{result.recorded_in} (fingerprint {result.identity.fingerprint[:12]})"))
    return summary_table(f"{result.name} → DCLS", rows)


def _as_dict(result) -> dict:
    report = result.report
    return {
        "model": result.name,
        "recipe": report.recipe,
        "init": report.init,
        "layers_replaced": [layer.name for layer in report.layers],
        "position_groups": report.position_groups,
        "params_before": report.params_before,
        "params_after": report.params_after,
        "max_span_growth": list(report.max_span_growth),
        "kernel_error": report.kernel_error,
        "logit_error": result.logit_error,
        "out": str(result.out) if result.out else None,
        "sha256": result.sha256,
        "fingerprint": result.identity.fingerprint,
        "weights_source": result.source,
        "recorded_in": result.recorded_in,
    }


@guarded
@o.with_model_options()
def convert(
    model: o.ModelName,
    model_options: dict = None,  # every model option (o.MODEL_OPTIONS)
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Write the converted weights here (.safetensors, else torch.save).", show_default=False)
    ] = None,
    device: o.Device = "cpu",
    db: o.Db = None,
    as_json: o.Json = False,
) -> None:
    """Replace a model's convolutions by DCLS per its recipe and write a checkpoint.

    Example: [bold]alignbench convert convnext_tiny --dcls --init from-dense --out convnext_tiny_dcls.safetensors[/]
    """
    from alignbench.models import convert_model
    from alignbench.store.queries import record_model

    if not model_options["dcls"]:
        raise ModelError("convert turns a model into its DCLS version: add --dcls")
    result = convert_model(o.model_request(model, **model_options), out=out, device=device)
    result = replace(result, recorded_in=record_model(db, result.identity, param_count=result.param_count, family=result.family))
    if as_json:
        print(json.dumps(_as_dict(result), indent=1))
        return
    Console().print(_summary(result))

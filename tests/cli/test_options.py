"""Options declared once: every command that takes a model takes every model option, `train`'s
parameters are TrainRequest's fields, the run filter is one set of options."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from alignbench.cli import _options as o
from alignbench.cli._basic_options import run_filter
from alignbench.cli.app import load_command
from alignbench.cli.train import TRAIN_OPTIONS

MODEL_COMMANDS = ["score", "explain", "convert", "train"]


def _options_of(command: str) -> set[str]:
    return {param.name for param in load_command(command).params}


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_takes_every_model_option(command: str) -> None:
    excluded = {"tag"} if command == "train" else set()  # train's --tag names the trained model
    assert set(o.MODEL_OPTIONS) - excluded <= _options_of(command)


def test_model_options_are_model_request_fields() -> None:
    from alignbench.models import ModelRequest

    fields = {field.name for field in dataclasses.fields(ModelRequest)}
    # with --ca-stream the CLI's --checkpoint is the stream's (stream_checkpoint) and --backbone-checkpoint
    # the backbone's (checkpoint); the name is the command's argument
    assert set(o.MODEL_OPTIONS) - fields == {"backbone_checkpoint"}
    assert fields - set(o.MODEL_OPTIONS) == {"name", "stream_checkpoint"}


def test_model_request_of_the_options() -> None:
    options = {name: default for name, (_, default) in o.MODEL_OPTIONS.items()}
    assert o.model_request("resnet18", **options) == o.model_request("resnet18")
    request = o.model_request(
        "resnet18",
        **{
            **options,
            "dcls": True,
            "version": o.DclsVersion("v1"),
            "init": o.InitMode("from-dense"),
            "kernel_count": 9,
            "pretrained": False,
        },
    )
    assert (request.dcls, request.version, request.init, request.kernel_count, request.pretrained) == (True, "v1", "from-dense", 9, False)
    stream = o.model_request("resnet18", ca_stream=True, checkpoint=Path("s.pt"), backbone_checkpoint=Path("b.pt"))
    assert (stream.stream_checkpoint, stream.checkpoint) == (Path("s.pt"), Path("b.pt"))


def test_train_parameters_are_the_train_request_fields() -> None:
    """A new TrainRequest field is an option of `train` of the same name (TrainRequest.from_options)."""
    from alignbench.training import TrainRequest

    fields = {field.name for field in dataclasses.fields(TrainRequest)}
    assert fields <= _options_of("train")
    # declared once, in train's table: every field but the model, and the place of the model options
    assert set(TRAIN_OPTIONS) == fields - {"model"} | {"model_options"}


def test_train_passes_its_options_to_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """--tag names the trained model (TrainRequest.tag), not the model trained from (ModelRequest.tag)."""
    import alignbench.training
    from alignbench.cli.app import app

    seen = {}

    def fake_train(request, **_):
        seen["request"] = request
        raise typer.Exit(0)

    monkeypatch.setattr(alignbench.training, "train", fake_train)
    arguments = ["train", "resnet18", "--dcls", "--data", "sample", "--out", "runs/x", "--tag", "mine", "--steps", "3", "--no-aug"]
    assert CliRunner().invoke(app, arguments).exit_code == 0
    request = seen["request"]
    assert (request.tag, request.model.tag, request.model.dcls) == ("mine", None, True)
    assert (request.data, request.out, request.steps, request.aug, request.lr) == ("sample", Path("runs/x"), 3, False, 1e-4)


def test_train_request_from_options() -> None:
    from alignbench.models import ModelRequest
    from alignbench.training import TrainRequest

    model = ModelRequest("resnet18")
    request = TrainRequest.from_options(model, {"data": "sample", "out": "runs/x", "steps": 3, "db": "ignored", "model": "ignored"})
    assert request == TrainRequest(model=model, data="sample", out=Path("runs/x"), steps=3)


def test_run_filter() -> None:
    from alignbench.analysis.runs import RunFilter

    assert run_filter() == RunFilter()
    assert run_filter("gradcam", "sample", "paper", "deletion", 4, True) == RunFilter(
        explainer="gradcam", dataset="sample", protocol="paper", metric="deletion", run_id=4, include_empty=True
    )


@pytest.mark.parametrize("command", ["compare", "report"])
def test_compare_and_report_take_the_run_filter(command: str) -> None:
    params = set(inspect.signature(run_filter).parameters) - ({"run"} if command == "compare" else set())
    assert params <= _options_of(command)


def test_with_model_options_passes_the_values_by_name() -> None:
    seen = {}

    @o.with_model_options(exclude=("tag",))
    def command(name: str, model_options: dict = None, other: int = 0) -> None:
        seen.update(model_options, name=name, other=other)

    parameters = list(inspect.signature(command).parameters)
    assert parameters[0] == "name" and parameters[-1] == "other" and "tag" not in parameters and "model_options" not in parameters
    command("m", dcls=True, other=2, **{n: d for n, (_, d) in o.MODEL_OPTIONS.items() if n not in ("tag", "dcls")})
    assert seen["dcls"] is True and seen["name"] == "m" and seen["other"] == 2 and "tag" not in seen
    assert isinstance(typer.main.get_command(_app(command)), typer.core.TyperCommand)


def test_with_options_splices_a_table_in_place() -> None:
    table = {"first": (Annotated[str, typer.Option("--first")], o.REQUIRED), "second": (Annotated[int, typer.Option("--second")], 2)}
    seen = {}

    @o.with_options(table, into="options")
    def command(name: str, options: dict = None, other: int = 0) -> None:
        seen.update(options, name=name, other=other)

    signature = inspect.signature(command)
    assert list(signature.parameters) == ["name", "first", "second", "other"]
    assert signature.parameters["first"].default is inspect.Parameter.empty and signature.parameters["second"].default == 2
    command("m", first="a", second=3, other=4)
    assert seen == {"first": "a", "second": 3, "name": "m", "other": 4}
    result = CliRunner().invoke(_app(command), ["m", "--first", "a"])
    assert result.exit_code == 0 and seen["second"] == 2
    assert CliRunner().invoke(_app(command), ["m"]).exit_code == 2  # --first is required


def _app(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    return app

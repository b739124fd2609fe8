"""Checkpoints that load but could only give wrong scores are refused in one line (issue 25): a
CA-Stream trained on another architecture whose shapes happen to fit, weights holding NaN or ±inf,
DCLS positions holding NaN (``score --dcls --checkpoint nanpos.safetensors``)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.errors import ModelError
from alignbench.models import ModelRequest, load_model, save_state_dict, save_stream

runner = CliRunner()


def _one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_a_ca_stream_of_another_architecture_is_refused_though_its_shapes_fit(tmp_path) -> None:
    path = tmp_path / "stream.safetensors"
    save_stream(load_model(ModelRequest("test_efficientnet", pretrained=False, ca_stream=True)), path)
    other = ModelRequest("test_efficientnet_gn", pretrained=False, ca_stream=True)
    # the premise of the probe: the two streams have the same shapes, so only the file's metadata tells them apart
    theirs = load_model(other).ca_stream.state_dict()
    ours = load_model(ModelRequest("test_efficientnet", pretrained=False, ca_stream=True)).ca_stream.state_dict()
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.items()}
    with pytest.raises(ModelError, match="is a CA-Stream trained on test_efficientnet, not test_efficientnet_gn"):
        load_model(ModelRequest("test_efficientnet_gn", pretrained=False, ca_stream=True, stream_checkpoint=path))
    result = runner.invoke(
        app,
        ["score", "test_efficientnet_gn", "--no-pretrained", "--ca-stream", "--checkpoint", str(path), "--limit", "1"]
        + ["--db", f"sqlite:///{tmp_path / 's.db'}"],
    )
    _one_line_error(result, "trained on test_efficientnet", "test_efficientnet --ca-stream")
    assert load_model(ModelRequest("test_efficientnet", pretrained=False, ca_stream=True, stream_checkpoint=path)) is not None


def test_weights_holding_nan_are_refused_naming_the_tensor(tmp_path) -> None:
    model = load_model(ModelRequest("test_efficientnet", pretrained=False))
    with torch.no_grad():
        model.conv_stem.weight[0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_state_dict(model, path)
    with pytest.raises(ModelError, match=r"1 of \d+ tensors hold NaN or ±inf values \(conv_stem.weight\)"):
        load_model(ModelRequest("test_efficientnet", pretrained=False, checkpoint=path))


def test_a_dcls_checkpoint_with_nan_positions_is_one_line(tmp_path) -> None:
    model = load_model(ModelRequest("test_efficientnet", dcls=True, pretrained=False, init="from-dense"))
    with torch.no_grad():
        positions = next(p for name, p in model.named_parameters() if name.endswith(".P"))  # DCLS's positions
        positions.view(-1)[0] = float("nan")
    path = tmp_path / "nanpos.safetensors"
    save_state_dict(model, path)
    result = runner.invoke(
        app,
        ["score", "test_efficientnet", "--no-pretrained", "--dcls", "--checkpoint", str(path), "--limit", "1"]
        + ["--db", f"sqlite:///{tmp_path / 's.db'}"],
    )
    _one_line_error(result, "NaN or ±inf", "nanpos.safetensors")

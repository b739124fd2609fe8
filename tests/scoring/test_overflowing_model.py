"""A model whose (finite) weights overflow its forward pass — what SGD at --lr 1e38 left of
efficientnet_lite0 — gives NaN logits: its rows store no prediction (argmax of NaN would be class 0)
and say why, instead of calling its map constant (issue 25, item 5)."""

from __future__ import annotations

import json
import sqlite3

import torch
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.models import ModelRequest, load_model, save_state_dict

runner = CliRunner()


def test_nan_logits_store_no_prediction_and_say_why(tmp_path) -> None:
    model = load_model(ModelRequest("test_efficientnet", pretrained=False))
    with torch.no_grad():
        model.conv_stem.weight.fill_(3e38)  # finite, but the first convolution's sums overflow to ±inf
        assert not torch.isfinite(model(torch.rand(1, 3, 64, 64))).all()  # the premise: NaN/inf logits
    path = tmp_path / "huge.safetensors"
    save_state_dict(model, path)
    db = tmp_path / "s.db"
    args = ["score", "test_efficientnet", "--no-pretrained", "--checkpoint", str(path), "--limit", "2", "--workers", "0"]
    result = runner.invoke(app, [*args, "--db", f"sqlite:///{db}", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_skipped"] == 2
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT prediction, confidence, spearman, skip_reason FROM image_score WHERE run_id = 1").fetchall()
    assert rows == [(None, None, None, "spearman: the model's output holds NaN or ±inf (its weights overflow the forward pass)")] * 2

"""`alignbench models` and `alignbench convert` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.models.specs import MODELS

runner = CliRunner()


def test_models_json_lists_every_registry_entry() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == list(MODELS)
    lite = rows["efficientnet_lite0"]
    assert (lite["params"], lite["dense_offline"], lite["dcls_weights"]) == (4_652_008, True, "from-dense")
    assert rows["resnet50"]["params"] == 25_557_032 and rows["resnet50"]["params_dcls"] < 25_557_032
    assert rows["convnext_tiny"]["dcls_url"].endswith("7112021/files/convnext_dcls_tiny_1k_224_ema.pth")
    assert rows["convnext_tiny"]["dcls_offline"] is False  # nothing downloaded in the test cache


def test_models_table() -> None:
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "fastvit_sa36 *" in result.stdout and "v1 17×17 n=34, depthwise 7×7" in result.stdout
    assert "zenodo 8370737" in result.stdout and "yes/yes" in result.stdout


def _dense_checkpoint(tmp_path: Path) -> Path:
    from alignbench.models import load_model
    from alignbench.models._load import save_state_dict

    path = tmp_path / "dense.safetensors"
    model = load_model("test_convnext", pretrained=False)
    save_state_dict(model, path)
    return path


def test_convert_writes_records_and_summarises(tmp_path: Path) -> None:
    out, db = tmp_path / "dcls.safetensors", f"sqlite:///{tmp_path / 'store.db'}"
    args = [
        "convert",
        "test_convnext",
        "--dcls",
        "--init",
        "from-dense",
        "--checkpoint",
        str(_dense_checkpoint(tmp_path)),
        "--version",
        "v0",
        "--dilated-kernel-size",
        "9",
        "--kernel-count",
        "49",
        "--out",
        str(out),
        "--db",
        db,
    ]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in (
        "layers replaced",
        "9 (4 shared position groups)",
        "7×7 → 9×9 per layer",
        "exact: every dense tap kept",
        "max |Δlogit| vs dense",
        "wrote",
    ):
        assert text in result.stdout
    assert out.is_file()

    from alignbench.models import model_identity
    from alignbench.store import open_store
    from alignbench.store.queries import find_model

    identity = model_identity("test_convnext", dcls=True, checkpoint=out, version="v0", dilated_kernel_size=9, kernel_count=49)
    with open_store(db) as store, store.session() as session:
        row = find_model(session, identity.fingerprint)
        assert row is not None and row.dcls and row.init == "checkpoint"

    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout)
    import torch

    from alignbench.models import load_model
    from alignbench.models._identity import RANDOM_SEED
    from alignbench.testing.tolerance import network_relative

    # the same taps summed in other orders through the network: network_relative of the largest logit on
    # the seeded probe (was 1e-3, tuned)
    converted = load_model("test_convnext", dcls=True, checkpoint=out, version="v0", dilated_kernel_size=9, kernel_count=49)
    probe = torch.randn(2, 3, *converted.alignbench_info.preprocessing.input_size, generator=torch.Generator().manual_seed(RANDOM_SEED))
    with torch.no_grad():
        bound = network_relative(converted) * float(converted(probe).abs().max())
    assert summary["kernel_error"] == 0.0 and summary["logit_error"] <= bound
    assert len(summary["layers_replaced"]) == 9 and summary["max_span_growth"][:2] == [7, 9]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "convnxt_tiny", "--dcls"], "unknown model 'convnxt_tiny'; closest: convnext_tiny"),
        (["convert", "efficientnet_lite0"], "add --dcls"),
        (["convert", "efficientnet_lite0", "--dcls", "--kernel-count", "400"], "kernel count 400 does not fit a 17×17"),
        (
            ["convert", "efficientnet_lite0", "--dcls", "--dilated-kernel-size", "3", "--kernel-count", "9"],
            "dilated kernel size 3 is smaller than the 5×5 kernel",
        ),
        (["convert", "efficientnet_lite0", "--dcls", "--init", "checkpoint"], "no published DCLS checkpoint"),
        (["convert", "convnext_tiny", "--dcls"], "cannot download the convnext_tiny DCLS checkpoint"),
    ],
)
def test_convert_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_convert_with_a_checkpoint_that_does_not_fit(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["convert", "test_resnet", "--dcls", "--init", "from-dense", "--checkpoint", str(_dense_checkpoint(tmp_path))]
    )
    assert result.exit_code == 2
    assert "checkpoint does not fit test_resnet (dense): missing: conv1.0.weight" in result.stderr

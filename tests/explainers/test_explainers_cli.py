"""The new explainers through the CLI: a ViT scored with Grad-CAM like a CNN, parameters in the setting, bad input in one line."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from alignbench.testing.cli import invoke, no_runs, one_line_error

MODELS = ("test_resnet", "test_vit")  # seeded random weights (--no-pretrained): offline


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One command: a ResNet and a ViT scored with Grad-CAM on two sample images, then compared."""
    db = tmp_path_factory.mktemp("store") / "s.db"
    result = invoke(
        "score", *MODELS, "--no-pretrained", "--explainer", "gradcam", "--limit", "2", "--workers", "0", "--db", f"sqlite:///{db}"
    )
    assert result.exit_code == 0, result.output
    return db


def test_a_vit_scored_with_gradcam_stores_rows_like_a_cnn(scored):
    con = sqlite3.connect(scored)
    try:
        runs = dict(
            con.execute("SELECT m.name, r.id FROM run r JOIN model m ON m.id = r.model_id WHERE m.name IN (?, ?)", MODELS).fetchall()
        )
        assert set(runs) == set(MODELS)
        for name, run_id in runs.items():
            rows = con.execute(
                "SELECT image_id, target, prediction, confidence, spearman, skip_reason FROM image_score WHERE run_id = ? ORDER BY image_id",
                (run_id,),
            ).fetchall()
            assert len(rows) == 2, name
            for image_id, target, prediction, confidence, spearman, skip_reason in rows:
                assert image_id and target is not None and prediction is not None and 0 < confidence <= 1, name
                assert (spearman is not None and -1 <= spearman <= 1) or skip_reason, name
        images = [
            con.execute("SELECT image_id FROM image_score WHERE run_id = ? ORDER BY image_id", (r,)).fetchall() for r in runs.values()
        ]
        assert images[0] == images[1]  # the same images, hence comparable
    finally:
        con.close()


def test_compare_and_report_put_the_resnet_and_the_vit_in_one_table(scored):
    result = invoke("compare", "--explainer", "gradcam", "--db", f"sqlite:///{scored}", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("[") : result.stdout.rindex("]") + 1])
    assert {row["model"] for row in rows} >= set(MODELS)
    assert all(row["explainer"] == "gradcam" and row["explainer_params"] == {} for row in rows)
    report = invoke("report", "--explainer", "gradcam", "--db", f"sqlite:///{scored}")
    assert report.exit_code == 0, report.output
    assert all(name in report.stdout for name in MODELS)


def test_attribution_parameters_are_part_of_the_setting(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    settings = []
    for extra in (["--samples", "2"], ["--samples", "2", "--noise", "0.3"]):
        args = ["score", "test_resnet", "--no-pretrained", "--explainer", "smoothgrad", *extra, "--limit", "1", "--workers", "0"]
        result = invoke(*args, "--db", db, "--json")
        assert result.exit_code == 0, result.output
        settings.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert settings[0]["explainer_params"] == {"samples": 2, "noise": 0.15, "seed": 0}
    assert settings[1]["explainer_params"] == {"samples": 2, "noise": 0.3, "seed": 0}
    assert settings[0]["run_id"] != settings[1]["run_id"]
    again = invoke(*args, "--db", db, "--json")  # the second setting once more: cached
    assert json.loads(again.stdout.strip().splitlines()[-1])["cached"] is True


def test_explain_writes_attribution_maps_in_the_input_geometry(shared_data, tmp_path):
    image = shared_data / "imagenet-val-10" / "ILSVRC2012_val_00009492.JPEG"
    out = tmp_path / "maps"
    args = ["explain", "test_resnet", str(image), "--out", str(out), "--no-pretrained"]
    result = invoke(*args, "--explainer", "integrated-gradients", "--ig-steps", "3", "--baseline", "blurred")
    assert result.exit_code == 0, result.output
    heatmap = np.load(out / "ILSVRC2012_val_00009492.npy")
    assert heatmap.shape == (160, 160) and heatmap.dtype == np.float32 and (heatmap >= 0).all()


@pytest.mark.parametrize(
    "model, extra, fragment",
    [
        ("test_resnet", ["--explainer", "integrated-gradients", "--ig-steps", "0"], "ig_steps must be in [1, inf)"),
        ("test_resnet", ["--explainer", "integrated-gradients", "--baseline", "white"], "baseline must be one of black, blurred"),
        ("test_resnet", ["--explainer", "smoothgrad", "--noise", "-0.1"], "noise must be in [0, inf)"),
        (
            "test_resnet",
            ["--explainer", "occlusion", "--window", "200"],
            "occlusion window 200 is larger than test_resnet's input (160x160)",
        ),
        ("test_resnet", ["--explainer", "occlusion", "--window", "8", "--stride", "9"], "occlusion stride 9 is larger than the window 8"),
        ("test_resnet", ["--explainer", "gradcam", "--layer", "2"], "--layer picks a block of a token transformer"),
        ("test_resnet", ["--explainer", "saliency", "--samples", "3"], "explainer 'saliency' takes no parameter 'samples'"),
        ("test_vit", ["--explainer", "gradcam", "--layer", "6"], "layer 6 is outside test_vit's 6 blocks"),
        (
            "test_vit",
            ["--explainer", "guided-backprop"],
            "guided-backprop clips the gradient at each nn.ReLU module, and test_vit has none",
        ),
        ("test_vit", ["--explainer", "fullgrad"], "fullgrad cannot explain test_vit (a token transformer)"),
    ],
)
def test_bad_explainer_input_is_one_line_and_exit_2_before_anything_is_written(shared_data, tmp_path, model, extra, fragment):
    image = shared_data / "imagenet-val-10" / "ILSVRC2012_val_00009492.JPEG"
    db = tmp_path / "s.db"
    out = tmp_path / "maps"
    for args in (
        ["explain", model, str(image), "--out", str(out)],
        ["score", model, "--limit", "1", "--workers", "0", "--db", f"sqlite:///{db}"],
    ):
        one_line_error(invoke(*args, "--no-pretrained", *extra), fragment)
    assert no_runs(db)
    assert not out.exists() or not any(out.iterdir())

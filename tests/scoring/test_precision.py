"""--precision: autocast on the model's forward passes only; maps, gradients and metrics in float32;
the precision is part of the run key unless fp32 (stored runs keep theirs). bf16 autocast runs on the
CPU, so the path is tested here; fp32 on CUDA against the CPU where a GPU exists."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import timm
import torch
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.explainers import _gradient, explain_batch
from alignbench.explainers._split import gradient_evidence
from alignbench.metrics.spearman import spearman

SIZE = 64


def _tiny(name: str = "test_resnet") -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


def _images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def _autocast_on() -> bool:
    return torch.is_autocast_enabled("cpu")


def test_bf16_autocast_covers_the_forward_passes_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny()
    seen: dict[str, tuple[bool, torch.dtype]] = {}

    def record(name: str):
        def hook(_module, _inputs, output) -> None:
            seen.setdefault(name, (_autocast_on(), output.dtype))

        return hook

    model.conv1.register_forward_hook(record("features"))
    model.fc.register_forward_hook(record("head"))
    original = _gradient.GRADIENT_METHODS["gradcam"]

    def recording(evidence, **params):
        seen["map"] = (_autocast_on(), evidence.activations.dtype)
        seen["gradient"] = (_autocast_on(), evidence.gradients.dtype)
        return original(evidence, **params)

    monkeypatch.setitem(_gradient.GRADIENT_METHODS, "gradcam", recording)
    explanation = explain_batch(model, _images(), method="gradcam", precision="bf16")
    assert seen["features"] == (True, torch.bfloat16)  # the backbone ran in bf16
    assert seen["head"] == (True, torch.bfloat16)  # and the head
    assert seen["map"] == (False, torch.float32) and seen["gradient"] == (False, torch.float32)  # A, dy/dA, map: fp32
    assert explanation.maps.dtype == torch.float32 and explanation.logits.dtype == torch.float32
    assert not _autocast_on()  # nothing leaks out of the call


def test_bf16_maps_agree_with_fp32_maps_and_fp32_is_unchanged() -> None:
    model, images = _tiny(), _images()
    exact = gradient_evidence(model, images)
    assert torch.equal(gradient_evidence(model, images, precision="fp32").gradients, exact.gradients)
    targets = exact.targets
    fp32 = explain_batch(model, images, targets, method="threshold-gradcam").maps
    bf16 = explain_batch(model, images, targets, method="threshold-gradcam", precision="bf16").maps
    assert not torch.equal(fp32, bf16)  # bf16 did change the forward's arithmetic
    # the same maps up to bf16's 8 bits of mantissa: rank correlation near 1 on every image
    assert spearman(bf16, fp32).min() > 0.95
    evidence = gradient_evidence(model, images, targets, precision="bf16")
    # bf16 (u = 2⁻⁸ ≈ 0.004): A rounded to bf16 reaches G through the head's norm; 0.05 ≈ 13 such roundings,
    # a budget for a few of them with margin, not a float32 bound
    torch.testing.assert_close(evidence.gradients, exact.gradients, rtol=0.05, atol=0.05 * exact.gradients.abs().max().item())


def test_attention_maps_in_bf16_are_float32() -> None:
    model = _tiny("test_vit")
    images = torch.randn(2, 3, *model.pretrained_cfg["input_size"][1:], generator=torch.Generator().manual_seed(0))
    fp32 = explain_batch(model, images, method="raw-attention").maps
    bf16 = explain_batch(model, images, method="raw-attention", precision="bf16").maps
    assert bf16.dtype == torch.float32
    assert spearman(bf16, fp32).min() > 0.9


def test_precision_is_a_run_of_its_own_and_fp32_keeps_its_key(tmp_path: Path) -> None:
    from alignbench.store import queries as q

    db = tmp_path / "s.db"
    runner = CliRunner()
    common = ["score", "--limit", "3", "--workers", "0", "--db", f"sqlite:///{db}", "--json"]
    fp32 = json.loads(runner.invoke(app, common).stdout)
    bf16_result = runner.invoke(app, [*common, "--precision", "bf16"])
    assert bf16_result.exit_code == 0, bf16_result.output
    bf16 = json.loads(bf16_result.stdout)
    assert bf16["run_id"] != fp32["run_id"] and not bf16["cached"]
    # not a rounding bound: bf16 maps rank-correlate > 0.95 with fp32's (above), and a rank statistic of
    # near-tied values has no useful rounding bound (tests/scoring/test_distributed.py); 0.05 is a budget
    assert bf16["mean_spearman"] == pytest.approx(fp32["mean_spearman"], abs=0.05)
    assert json.loads(runner.invoke(app, [*common, "--precision", "bf16"]).stdout)["cached"] is True
    con = sqlite3.connect(db)
    rows = dict(con.execute("SELECT id, precision FROM run").fetchall())
    assert rows[fp32["run_id"]] == "fp32" and rows[bf16["run_id"]] == "bf16"
    # the fp32 run's key is the key runs had before precision existed
    (key, model_fp, params, dataset_fp) = con.execute(
        "SELECT run.key, model.weights_fingerprint, explainer_setting.params, dataset.fingerprint FROM run "
        "JOIN model ON model.id = run.model_id JOIN explainer_setting ON explainer_setting.id = run.explainer_id "
        "JOIN dataset ON dataset.id = run.dataset_id WHERE run.id = ?",
        (fp32["run_id"],),
    ).fetchone()
    assert key == q.run_key(model_fp, "threshold-gradcam", json.loads(params), dataset_fp, "aligned", ["spearman"])
    con.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--precision", "fp8"], "unknown --precision 'fp8'"),
        (["--explainer", "eigencam", "--precision", "bf16"], "eigencam comes from pytorch-grad-cam: use --precision fp32"),
    ],
)
def test_bad_precision_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["score", "--limit", "1", "--workers", "0", *args, "--db", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp32_on_cuda_equals_the_cpu(tmp_path: Path) -> None:
    runner = CliRunner()
    results = {}
    for device in ("cpu", "cuda"):
        out = runner.invoke(
            app, ["score", "--limit", "8", "--workers", "1", "--device", device, "--json", "--db", f"sqlite:///{tmp_path / device}.db"]
        )
        assert out.exit_code == 0, out.output
        results[device] = json.loads(out.stdout)
    assert results["cuda"]["device"].startswith("cuda")
    # not a rounding bound (other kernels on another device; a rank statistic of near-tied values has none
    # worth checking, see tests/scoring/test_distributed.py): a budget, on machines with CUDA only
    assert results["cuda"]["mean_spearman"] == pytest.approx(results["cpu"]["mean_spearman"], abs=1e-4)

"""Every user error is one true, actionable line and exit 2, found before the work it would spoil
(issue 11, items 3 and 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignbench.testing.cli import add_run, invoke, no_runs, one_line_error, plain_file, sample_run_key, sha

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "alignbench" / "data" / "sample"
SNAKE = SAMPLE_DIR / "ILSVRC2012_val_00009492.JPEG"


@pytest.fixture()
def cached_store(tmp_path: Path) -> tuple[str, Path]:
    """A store whose answer to the plain `alignbench score` is stored (a complete sample run)."""
    path = tmp_path / "cached.db"
    key, n, _ = sample_run_key()
    add_run(f"sqlite:///{path}", key=key, n_images=n, n_rows=n)
    plain_file(path)
    return f"sqlite:///{path}", path


@pytest.mark.parametrize("workers", ["-1", "500"])
def test_workers_outside_zero_to_the_core_count_are_refused_before_anything(tmp_path: Path, workers: str) -> None:
    db = tmp_path / "s.db"
    result = invoke("score", "--workers", workers, "--db", f"sqlite:///{db}")
    one_line_error(result, "--workers must be between 0 and", f"got {workers}")
    assert not db.exists()


@pytest.mark.parametrize("option", [["--device", "tpu"], ["--workers", "500"], ["--workers", "-1"]])
def test_options_are_checked_even_when_the_answer_is_cached(cached_store, option) -> None:
    url, path = cached_store
    assert invoke("score", "--db", url, "--json").exit_code == 0  # the answer is indeed cached
    before = sha(path)
    one_line_error(invoke("score", *option, "--db", url), option[1])
    assert sha(path) == before


def test_a_dcls_checkpoint_without_dcls_says_to_add_dcls(tmp_path: Path) -> None:
    from alignbench.models import load_model

    path = tmp_path / "dcls.pth"
    torch.save(load_model("test_convnext", dcls=True, pretrained=False, init="random").state_dict(), path)
    db = tmp_path / "s.db"
    for command in (
        ["score", "test_convnext", "--checkpoint", path, "--db", f"sqlite:///{db}", "--workers", "0"],
        ["explain", "test_convnext", SNAKE, "--checkpoint", path, "--out", tmp_path / "maps"],
    ):
        line = one_line_error(invoke(*command), "holds DCLS layers", "load it with --dcls")
        assert "--init" not in line
    assert no_runs(db) and not (tmp_path / "maps").exists()


@pytest.mark.parametrize(
    "content, fragments",
    [
        (lambda path: path.write_bytes(np.random.default_rng(0).bytes(5000)), ["is not a checkpoint alignbench can read", "state_dict"]),
        (lambda path: path.write_text("hello"), ["is not a checkpoint alignbench can read"]),
        (lambda path: torch.save(torch.nn.Linear(2, 2), path), ["pickles a Python object (torch.nn.modules.linear.Linear)", "state_dict"]),
        (lambda path: torch.save([1, 2, 3], path), ["holds no state_dict"]),
    ],
)
def test_a_file_that_is_no_state_dict_is_named_as_such_without_pytorchs_advice(tmp_path: Path, content, fragments) -> None:
    path = tmp_path / "weights.pt"
    content(path)
    db = tmp_path / "s.db"
    line = one_line_error(invoke("score", "--checkpoint", path, "--db", f"sqlite:///{db}", "--workers", "0"), *fragments)
    assert "weights_only" not in line
    assert no_runs(db)


def test_explain_on_a_directory_without_images_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    one_line_error(
        invoke("explain", "efficientnet_lite0", empty, "--out", tmp_path / "maps"), f"{empty} is a directory with no image file in it"
    )
    assert not (tmp_path / "maps").exists()


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("in the way")
    return path


def test_explain_out_that_cannot_be_a_directory_is_refused_before_the_model_loads(tmp_path: Path, monkeypatch) -> None:
    from alignbench.explainers import _files

    monkeypatch.setattr(_files, "_load", lambda *a, **k: pytest.fail("the model was loaded"))
    blocker = _a_file(tmp_path)
    one_line_error(invoke("explain", "efficientnet_lite0", SNAKE, "--out", blocker / "maps"), "is a file, not a directory")
    one_line_error(invoke("explain", "efficientnet_lite0", SNAKE, "--out", blocker), "is a file; give a directory")


def test_convert_out_is_checked_before_the_conversion(tmp_path: Path, monkeypatch) -> None:
    from alignbench.models import _load

    monkeypatch.setattr(_load, "_dense", lambda *a, **k: pytest.fail("the conversion started"))
    blocker = _a_file(tmp_path)
    db = tmp_path / "s.db"
    for out in (blocker / "lite0.safetensors", tmp_path):
        one_line_error(invoke("convert", "efficientnet_lite0", "--dcls", "--out", out, "--db", f"sqlite:///{db}"), f"--out {out}")
    assert not db.exists()


@pytest.mark.parametrize("option, target", [("--csv", "report.csv"), ("--png", "figures")])
def test_report_outputs_are_checked_before_the_report_is_built(cached_store, tmp_path: Path, option, target, monkeypatch) -> None:
    from alignbench.analysis import report

    url, path = cached_store
    before = sha(path)
    monkeypatch.setattr(report, "report", lambda *a, **k: pytest.fail("the report was built"))
    one_line_error(invoke("report", option, _a_file(tmp_path) / target, "--db", url), "is a file, not a directory")
    assert sha(path) == before


def _folder(root: Path, labels: str | None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "heatmaps").mkdir()
    for k, source in enumerate(sorted(SAMPLE_DIR.glob("*.JPEG"))[:2]):
        image = Image.open(source).convert("RGB").resize((64, 48))
        image.save(root / "images" / f"img{k}.png")
        yy, xx = np.mgrid[:48, :64]
        np.save(root / "heatmaps" / f"img{k}.npy", np.exp(-((yy - 20) ** 2 + (xx - 30) ** 2) / 200.0).astype(np.float32))
    if labels is not None:
        (root / "labels.csv").write_text(labels)
    return root


@pytest.mark.parametrize("label", ["-1", "-3"])
def test_a_negative_label_is_refused_the_same_way_whatever_its_value(tmp_path: Path, label: str) -> None:
    root = _folder(tmp_path / "f", f"filename,label\nimg0.png,{label}\nimg1.png,3\n")
    db = tmp_path / "s.db"
    one_line_error(
        invoke("score", "--dataset", "folder", "--data-dir", root, "--db", f"sqlite:///{db}", "--workers", "0"),
        f"label {label} is not a class index",
        "leave it empty ('img0.png,')",
    )
    assert not db.exists()


def test_an_empty_label_means_the_top1_prediction(tmp_path: Path) -> None:
    from alignbench.datasets import open_dataset

    root = _folder(tmp_path / "f", "filename,label\nimg0.png,\nimg1.png,3\n")
    dataset = open_dataset("folder", root)
    assert dataset.labels() == [-1, 3]
    dataset.check_labels(1000)


def test_a_negative_clickme_label_is_refused_not_taken_as_no_label(tmp_path: Path) -> None:
    from alignbench.datasets import ClickMeRecord, open_dataset, write_clickme_shard
    from alignbench.errors import DatasetError

    shards = tmp_path / "shards"
    shards.mkdir()
    pixels = np.zeros((256, 256, 3), np.uint8)
    heat = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    write_clickme_shard(shards / "val-0.tfrecords", [ClickMeRecord(pixels, heat, 3), ClickMeRecord(pixels, heat, -1)])
    dataset = open_dataset("clickme-val", shards, download=False)
    with pytest.raises(DatasetError, match=r"image val-0:1 has label -1, outside the model's 1000 classes \(0–999\)"):
        dataset.check_labels(1000)


def test_a_refused_model_leaves_no_new_store_behind(tmp_path) -> None:
    """The probe: `score MODEL --checkpoint not-a-checkpoint --db new.db` refused the model and left
    an empty store at new.db."""
    bad = tmp_path / "notes.txt"
    bad.write_text("not a checkpoint")
    store = tmp_path / "new.db"
    result = invoke("score", "efficientnet_lite0", "--checkpoint", str(bad), "--limit", "1", "--db", str(store))
    one_line_error(result, "is not a checkpoint alignbench can read")
    assert not store.exists() and not list(tmp_path.glob("new.db*"))

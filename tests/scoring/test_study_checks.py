"""A study file is checked whole before its first cell runs (issue 25, item 11): every path and every
dataset's files, each refusal naming file:line of the key at fault; ``study status`` shows a cell whose
checkpoint is not on this machine instead of refusing the study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.scoring.study import StudyError, load_study
from alignbench.store import open_store
from alignbench.store.tables import Run

runner = CliRunner()

TWO_DATASETS = """\
name = "two"

[[model]]
name = "test_efficientnet"
pretrained = false

[[dataset]]
name = "sample"

[[dataset]]
name = "folder"
data_dir = "not-here"

[run]
limit = 1
"""

MISSING_CHECKPOINT = """\
name = "ckpt"

[[model]]
name = "test_efficientnet"
pretrained = false
checkpoint = "gone.safetensors"

[[dataset]]
name = "sample"

[run]
limit = 1
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def _line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_a_missing_data_dir_of_a_later_dataset_is_refused_before_the_first_cell(tmp_path) -> None:
    path, db = _write(tmp_path, TWO_DATASETS), f"sqlite:///{tmp_path / 's.db'}"
    result = runner.invoke(app, ["study", "run", str(path), "--db", db])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}:{_line_of(TWO_DATASETS, 'data_dir')}: data_dir ") and "not-here" in line
    assert not (tmp_path / "s.db").exists() or _runs(db) == 0  # no cell ran


def _runs(db: str) -> int:
    with open_store(db, create=False) as store, store.session() as session:
        return len(session.query(Run).all())


def test_a_missing_checkpoint_is_reported_at_its_key_line(tmp_path) -> None:
    path = _write(tmp_path, MISSING_CHECKPOINT)
    with pytest.raises(StudyError) as raised:
        load_study(path)
    assert raised.value.message.startswith(f"{path}:{_line_of(MISSING_CHECKPOINT, 'checkpoint =')}: checkpoint ")
    assert "gone.safetensors does not exist" in raised.value.message


def test_a_dataset_that_needs_a_data_dir_without_one_is_refused_at_its_table(tmp_path) -> None:
    text = TWO_DATASETS.replace('data_dir = "not-here"\n', "")
    path = _write(tmp_path, text)
    with pytest.raises(StudyError) as raised:
        load_study(path)
    header = _line_of(text, 'name = "folder"') - 1  # the [[dataset]] line of the second table
    assert raised.value.message.startswith(f"{path}:{header}: dataset 'folder' needs data_dir")


def test_study_status_shows_a_cell_whose_checkpoint_is_not_here(tmp_path) -> None:
    path = _write(tmp_path, MISSING_CHECKPOINT)
    result = runner.invoke(app, ["study", "status", str(path), "--db", f"sqlite:///{tmp_path / 's.db'}", "--json"])
    assert result.exit_code == 0, result.output
    (cell,) = json.loads(result.stdout)["cells"]
    assert cell["state"] == "missing" and cell["wanted"] is None and cell["run_id"] is None


def test_a_dataset_without_what_the_metrics_need_is_refused_at_its_table(tmp_path) -> None:
    (tmp_path / "nomaps" / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "nomaps" / "images" / "a.png")
    text = TWO_DATASETS.replace('"not-here"', '"nomaps"')
    with pytest.raises(StudyError) as raised:
        load_study(_write(tmp_path, text))
    header = _line_of(text, 'name = "folder"') - 1
    assert raised.value.message.startswith(f"{tmp_path / 'study.toml'}:{header}: metric 'spearman' needs reference maps")

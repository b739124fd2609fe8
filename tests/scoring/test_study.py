"""Studies: the grid as data, its mistakes named by line, status from the store alone, run and resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.models import ModelRequest
from alignbench.scoring.study import StudyError, load_study

SMALL = """\
name = "small"
metrics = ["spearman"]

[[model]]
name = "efficientnet_lite0"
dcls = [false, true]

[[explainer]]
method = "gradcam"

[[dataset]]
name = "sample"

[run]
limit = 3
"""


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_built_in_studies_expand_to_their_grids() -> None:
    paper = load_study("paper").requests()
    assert len(paper) == 32
    assert {(r.model.name, r.model.dcls) for r in paper} == {
        (name, dcls)
        for name in (
            "resnet50",
            "convnext_tiny",
            "convnext_small",
            "convnext_base",
            "caformer_s18",
            "convformer_s18",
            "fastvit_sa24",
            "fastvit_sa36",
        )
        for dcls in (False, True)
    }
    assert {(r.explainer, tuple(r.explainer_params.items())) for r in paper} == {
        ("gradcam", ()),
        ("threshold-gradcam", (("threshold", 0.3),)),
    }
    assert {(r.dataset, r.protocol, r.metrics, r.precision) for r in paper} == {("clickme-val", "aligned", ("spearman",), "fp32")}
    demo = load_study("demo").requests(limit=2, device="cpu")
    assert len(demo) == 4 and all(r.dataset == "sample" and r.limit == 2 and r.device == "cpu" for r in demo)


def test_model_keys_are_model_request_fields_and_lists_expand(tmp_path: Path) -> None:
    text = """\
[[model]]
name = "efficientnet_lite0"
dcls = true
init = "from-dense"
kernel-count = [20, 34]
tag = "lite0-dcls"

[[explainer]]
method = "threshold"
threshold = [0.2, 0.4]
"""
    study = load_study(_write(tmp_path, text))
    assert study.models == (
        ModelRequest("efficientnet_lite0", dcls=True, init="from-dense", kernel_count=20, tag="lite0-dcls"),
        ModelRequest("efficientnet_lite0", dcls=True, init="from-dense", kernel_count=34, tag="lite0-dcls"),
    )
    assert study.explainers == (("threshold-gradcam", {"threshold": 0.2}), ("threshold-gradcam", {"threshold": 0.4}))
    assert len(study.requests()) == 4 and {r.dataset for r in study.requests()} == {"sample"}
    # every field of ModelRequest is a study key: the message lists them all, read from the dataclass
    with pytest.raises(StudyError) as error:
        load_study(_write(tmp_path, '[[model]]\nname = "efficientnet_lite0"\nwidth = 3\n'))
    assert all(field.name in error.value.message for field in dataclasses.fields(ModelRequest))


def test_a_checkpoint_is_relative_to_the_study_file(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "lite0.pth").write_bytes(b"not really weights")
    study = load_study(_write(tmp_path, '[[model]]\nname = "efficientnet_lite0"\ncheckpoint = "weights/lite0.pth"\n'))
    assert study.models[0].checkpoint == (weights / "lite0.pth")


def test_trained_models_enter_by_tag_and_stream_files_are_relative(tmp_path: Path) -> None:
    from alignbench.models import model_identity
    from alignbench.store import open_store
    from alignbench.store import queries as q

    weights = tmp_path / "runs"
    weights.mkdir()
    (weights / "stream.safetensors").write_bytes(b"a stream file")
    (weights / "last.safetensors").write_bytes(b"trained weights")
    db = f"sqlite:///{tmp_path / 's.db'}"
    trained = ModelRequest("efficientnet_lite0", dcls=True, checkpoint=weights / "last.safetensors", tag="lite0-pos")
    store = open_store(db)
    with store, store.session(write=True) as session:
        parent = q.upsert_model(session, model_identity("efficientnet_lite0", dcls=True))
        q.record_trained_model(session, model_identity(trained), origin="dcls-finetune", parent=parent, lineage={"steps": 3})
        session.commit()
    text = (
        '[[model]]\ntrained = "lite0-pos"\n\n'
        '[[model]]\nname = "efficientnet_lite0"\nca-stream = true\nstream_checkpoint = "runs/stream.safetensors"\n'
    )
    study = load_study(_write(tmp_path, text), db=db)
    assert study.models == (trained, ModelRequest("efficientnet_lite0", ca_stream=True, stream_checkpoint=weights / "stream.safetensors"))
    with pytest.raises(StudyError, match="no model tagged 'nope'"):
        load_study(_write(tmp_path, '[[model]]\ntrained = "nope"\n'), db=db)
    with pytest.raises(StudyError, match="takes no other key"):
        load_study(_write(tmp_path, '[[model]]\ntrained = "lite0-pos"\ndcls = true\n'), db=db)


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('[[model]]\nname = "efficientnet_lite0"\ndcls = true\nwidht = 3\n', 4, "unknown model key 'widht'"),
        ('[[model]]\nname = "resnet5o"\n', 2, "unknown model 'resnet5o'"),
        ('[[model]]\nname = "efficientnet_lite0"\ndcls = "yes"\n', 3, "model key 'dcls' = 'yes'"),
        (
            '[[model]]\nname = "efficientnet_lite0"\n\n[[explainer]]\nmethod = "gradcam"\n\n[[explainer]]\nmethod = "gradkam"\n',
            8,
            "unknown explainer 'gradkam'",
        ),
        (
            '[[model]]\nname = "efficientnet_lite0"\n[[explainer]]\nmethod = "gradcam"\nthreshold = 0.3\n',
            5,
            "takes no parameter 'threshold'",
        ),
        ('metrics = ["spearman", "pointing"]\n[[model]]\nname = "efficientnet_lite0"\n', 1, "unknown metric 'pointing'"),
        ('protocols = ["cropped"]\n[[model]]\nname = "efficientnet_lite0"\n', 1, "unknown protocol 'cropped'"),
        ('[[model]]\nname = "efficientnet_lite0"\n[[dataset]]\nname = "imagenet"\n', 4, "unknown dataset 'imagenet'"),
        ('[[model]]\nname = "efficientnet_lite0"\n[run]\nbatch_size = 8\nthreads = 2\n', 5, "unknown [run] key 'threads'"),
        ('[[model]]\nname = "efficientnet_lite0"\n[run]\nprecision = "fp8"\n', 3, "unknown --precision 'fp8'"),
        ('modles = []\n[[model]]\nname = "efficientnet_lite0"\n', 1, "unknown key 'modles'"),
        ('[[model]]\nname = "efficientnet_lite0"\ndcls = tru\n', 3, "not valid TOML"),
        ("[[model]]\ndcls = true\n", 1, "needs a name"),
    ],
)
def test_a_mistake_in_a_study_file_is_one_line_naming_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _write(tmp_path, text)
    db = tmp_path / "s.db"
    for command in ("status", "run"):
        result = CliRunner().invoke(app, ["study", command, str(path), "--db", f"sqlite:///{db}"])
        assert result.exit_code == 2, result.output
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in result.output
        assert words in message
        assert f"{path}:{line}: " in message or (words == "not valid TOML" and f"line {line}" in message)
    assert not db.exists()  # nothing created


def test_an_unknown_study_name_says_what_exists(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["study", "status", "papper", "--db", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2 and "paper, demo" in result.stderr


def _store_cells(db: Path, study_path: Path) -> None:
    """The first cell complete (3 of 3 images), the second partial (1 of 3): rows as score would key them."""
    from alignbench.datasets import open_dataset
    from alignbench.store import open_store
    from alignbench.testing.synthetic import add_request_run

    requests = load_study(study_path).requests()
    sample = open_dataset("sample")
    with open_store(f"sqlite:///{db}") as store:
        add_request_run(store, requests[0], sample, [0.5, 0.25, 0.75])
        add_request_run(store, requests[1], sample, [0.1])


def test_status_reads_the_store_only_without_torch(tmp_path: Path) -> None:
    study = _write(tmp_path, SMALL)
    db = tmp_path / "s.db"
    _store_cells(db, study)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code = (
        "import json, sys; from alignbench.scoring.study import load_study, study_status; "
        f"cells = study_status(load_study({str(study)!r}).requests(), db={f'sqlite:///{db}'!r}); "
        "print(json.dumps([c.to_json() for c in cells])); assert 'torch' not in sys.modules, 'status imported torch'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cells = json.loads(done.stdout)
    assert [(c["dcls"], c["state"], c["stored"], c["wanted"], c["matched_by"]) for c in cells] == [
        (False, "done", 3, 3, "key"),
        (True, "partial", 1, 3, "key"),
    ]
    result = CliRunner().invoke(app, ["study", "status", str(study), "--db", f"sqlite:///{db}"])
    assert result.exit_code == 0, result.output
    assert "2 runs: 1 done, 1 partial, 0 missing · 4 of 6 images" in result.stdout
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # reading wrote nothing
    # no store at all: every cell missing, and no store created
    empty = CliRunner().invoke(app, ["study", "status", str(study), "--db", f"sqlite:///{tmp_path / 'none.db'}", "--json"])
    assert empty.exit_code == 0 and {c["state"] for c in json.loads(empty.stdout)["cells"]} == {"missing"}
    assert not (tmp_path / "none.db").exists()


def test_status_matches_by_name_where_weights_or_data_are_not_here(tmp_path: Path) -> None:
    """The paper's baselines: no timm weights and no ClickMe shards here, so no exact run key; a run
    stored by a machine that had them is found by model, settings and dataset name."""
    from alignbench.store import open_store
    from alignbench.testing.synthetic import add_run

    db = tmp_path / "s.db"
    with open_store(f"sqlite:///{db}") as store:
        add_run(store, model="resnet50", dcls=False, values=[0.3] * 5, method="gradcam", params={}, dataset_size=8, status="partial")
    result = CliRunner().invoke(app, ["study", "status", "paper", "--db", f"sqlite:///{db}", "--json"])
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["cells"]
    first = cells[0]
    assert (first["model"], first["dcls"], first["explainer"]) == ("resnet50", False, "gradcam")
    assert (first["state"], first["stored"], first["wanted"], first["matched_by"]) == ("partial", 5, 8, "name")
    assert {c["state"] for c in cells[1:]} == {"missing"}


def test_study_run_computes_what_is_missing_then_compares(tmp_path: Path) -> None:
    study = _write(tmp_path, SMALL)
    db = tmp_path / "s.db"
    _store_cells(db, study)  # cell 1 complete (made-up values), cell 2 has 1 of its 3 images
    runner = CliRunner()
    first = runner.invoke(app, ["study", "run", str(study), "--db", f"sqlite:///{db}", "--workers", "0"])
    assert first.exit_code == 0, first.output
    assert "DCLS vs baseline" in first.stdout and "Ranking" in first.stdout
    assert "2 runs, 1 computed now, 1 already in the store" in first.stdout
    assert "[1/2] efficientnet_lite0 · gradcam · sample · aligned" in first.stderr
    again = runner.invoke(app, ["study", "run", str(study), "--db", f"sqlite:///{db}", "--json"])
    document = json.loads(again.stdout)
    assert [r["cached"] for r in document["runs"]] == [True, True]
    assert [r["n_scored"] for r in document["runs"]] == [3, 3]
    assert document["runs"][1]["computed_images"] == 0 and len(document["compare"]) == 1
    status = runner.invoke(app, ["study", "status", str(study), "--db", f"sqlite:///{db}"])
    assert "2 runs: 2 done, 0 partial, 0 missing · 6 of 6 images" in status.stdout


def test_score_with_several_models_is_a_study_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    result = CliRunner().invoke(
        app,
        [
            "score",
            "efficientnet_lite0",
            "efficientnet_lite1",
            "--explainer",
            "gradcam",
            "--limit",
            "2",
            "--workers",
            "0",
            "--db",
            f"sqlite:///{db}",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert [(r["model"], r["n_scored"], r["cached"]) for r in runs] == [("efficientnet_lite0", 2, False), ("efficientnet_lite1", 2, False)]
    table = CliRunner().invoke(
        app, ["score", "efficientnet_lite0", "efficientnet_lite1", "--explainer", "gradcam", "--limit", "2", "--db", f"sqlite:///{db}"]
    )
    assert table.exit_code == 0 and "Ranking" in table.stdout and "cached" in table.stdout
    bad = CliRunner().invoke(app, ["score", "efficientnet_lite0", "efficientnet_lite1", "--checkpoint", str(db), "--db", f"sqlite:///{db}"])
    assert bad.exit_code == 2 and "--checkpoint" in bad.stderr


def test_a_failing_run_names_its_cell_and_keeps_what_is_stored(tmp_path: Path) -> None:
    # files that are there but cannot be decoded fail only when the run reads them (a missing
    # data_dir is refused before the first cell: tests/scoring/test_study_checks.py)
    for folder in ("images", "heatmaps"):
        (tmp_path / "broken" / folder).mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "broken" / "heatmaps" / "a.png")
    (tmp_path / "broken" / "images" / "a.png").write_bytes(b"not a png")
    text = SMALL.replace('name = "sample"', 'name = "folder"\ndata_dir = "broken"')
    result = CliRunner().invoke(app, ["study", "run", str(_write(tmp_path, text)), "--db", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: run 1/2 (efficientnet_lite0 · gradcam · folder · aligned): ") and "a.png" in message

"""What the second adversarial probe found in `alignbench train` (issue 25), one test per case, each
through the command the probe ran, on a tiny timm model and 64×64 images: a trained model's file is
checked against its fingerprint, --out is locked, a tag names one model, non-finite weights are never
saved, TAG@best is recorded when the best step is the last, a run can be extended, and the small
refusals are one line that leaves no --out behind."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.models import ModelRequest
from alignbench.scoring import trained_request
from alignbench.store import open_store
from alignbench.store import queries as q
from alignbench.training import TrainRequest, train
from alignbench.training._checkpoint import prepare_out

runner = CliRunner()
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")  # ImageNet-1k classes 0..3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """An ImageFolder tree: 4 ImageNet wnid folders × 2 images, each class its own colour plus noise."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label, wnid in enumerate(WNIDS):
        (root / wnid).mkdir()
        base = np.array([[60, 60, 60], [200, 60, 60], [60, 200, 60], [60, 60, 200]][label], dtype=np.float64)
        for i in range(2):
            pixels = np.clip(base + rng.normal(0, 25, (72, 80, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"{wnid}_{i}.png")
    return root


def _train(data: Path, out: Path, db: str, *options: str):
    args = ["train", "test_efficientnet", "--no-pretrained", "--data", str(data), "--out", str(out), "--steps", "1"]
    args += ["--batch-size", "4", "--img-size", "64", "--workers", "0", "--db", db, *options]
    return runner.invoke(app, args)


def _one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def _tagged(db: str, tag: str):
    with open_store(db, create=False) as store, store.session() as session:
        rows = q.models_tagged(session, tag)
        return (rows[0].weights_fingerprint, q.model_tags(session, rows[0].id)) if rows else None


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 's.db'}"


# ------------------------------------------------------------------------- 1: fingerprints, the lock


def test_score_trained_refuses_a_file_another_run_overwrote_and_renames_nothing(tmp_path, data) -> None:
    db, out = _db(tmp_path), tmp_path / "A"
    assert _train(data, out, db, "--tag", "t1").exit_code == 0
    first = _tagged(db, "t1")[0]
    shutil.rmtree(out)
    assert _train(data, out, db, "--tag", "t2", "--seed", "5").exit_code == 0
    second = _tagged(db, "t2")[0]
    assert first != second
    refused = runner.invoke(app, ["score", "--trained", "t1", "--db", db])
    _one_line_error(refused, "no longer holds the model tagged 't1'", first[:12], second[:12])
    assert _tagged(db, "t1")[0] == first and _tagged(db, "t2")[0] == second  # nobody renamed
    assert trained_request("t2", db).checkpoint == out / "last.safetensors"


def test_a_second_train_into_an_out_being_written_is_refused_and_the_lock_dies_with_its_process(tmp_path, data) -> None:
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from pathlib import Path
                from alignbench.training._checkpoint import prepare_out
                prepare_out(Path({str(out)!r}), None)
                print("locked", flush=True)
                time.sleep(600)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        _one_line_error(_train(data, out, _db(tmp_path)), f"--out {out} is being written by another")
        assert sorted(os.listdir(out)) == []  # the refused run removed nothing (and wrote nothing)
    finally:
        holder.kill()  # kill -9: no clean-up runs in the holder
        holder.wait()
    held = prepare_out(out, None)  # the lock went with the process
    held.release()


# ------------------------------------------------------------------------------------------ 3: tags


def test_identical_weights_under_a_new_tag_keep_the_old_tag_too(tmp_path, data) -> None:
    db = _db(tmp_path)
    assert _train(data, tmp_path / "one", db, "--tag", "one").exit_code == 0
    assert _train(data, tmp_path / "two", db, "--tag", "two").exit_code == 0  # same seed, same data: the same weights
    fingerprint, tags = _tagged(db, "one")
    assert _tagged(db, "two") == (fingerprint, ["one", "two"])
    assert trained_request("one", db).checkpoint == trained_request("two", db).checkpoint == tmp_path / "one" / "last.safetensors"
    with open_store(db, create=False) as store, store.session() as session:
        lineage = json.loads(q.models_tagged(session, "two")[0].lineage)
    assert lineage["checkpoint"] == str(tmp_path / "one" / "last.safetensors")  # lineage and weights_source agree


def test_a_tag_naming_other_weights_is_refused_before_training_unless_retag(tmp_path, data) -> None:
    db = _db(tmp_path)
    assert _train(data, tmp_path / "a", db, "--tag", "dup").exit_code == 0
    old = _tagged(db, "dup")[0]
    refused = _train(data, tmp_path / "b", db, "--tag", "dup", "--seed", "7")
    _one_line_error(refused, "tag 'dup' already names another model", old[:12], "--retag")
    assert not (tmp_path / "b").exists()  # refused before anything was written
    assert _train(data, tmp_path / "c", db, "--tag", "dup", "--seed", "7", "--retag").exit_code == 0
    new, tags = _tagged(db, "dup")
    assert new != old and tags == ["dup"]
    with open_store(db, create=False) as store, store.session() as session:
        moved_from = q.find_model(session, old)
        assert q.model_tags(session, moved_from.id) == [] and moved_from.tag is None


def test_score_model_tag_on_a_stored_model_adds_the_tag_or_refuses_one_in_use(tmp_path, data) -> None:
    db = _db(tmp_path)
    assert _train(data, tmp_path / "a", db, "--tag", "first").exit_code == 0
    assert _train(data, tmp_path / "b", db, "--tag", "taken", "--seed", "3").exit_code == 0
    checkpoint = str(tmp_path / "a" / "last.safetensors")
    base = ["score", "test_efficientnet", "--no-pretrained", "--checkpoint", checkpoint, "--limit", "1", "--batch-size", "1", "--db", db]
    scored = runner.invoke(app, [*base, "--tag", "other", "--workers", "0"])
    assert scored.exit_code == 0, scored.output
    assert _tagged(db, "other")[1] == ["first", "other"]
    cached = runner.invoke(app, [*base, "--tag", "third", "--workers", "0"])  # answered from the store: still tagged
    assert cached.exit_code == 0 and "cached" in cached.stdout
    assert _tagged(db, "third")[1] == ["first", "other", "third"]
    _one_line_error(runner.invoke(app, [*base, "--tag", "taken", "--workers", "0"]), "tag 'taken' already names another model")
    assert _tagged(db, "taken")[1] == ["taken"]


# ------------------------------------------------------------------------------- 5: non-finite weights


def test_non_finite_weights_after_a_step_are_refused_before_anything_is_saved_or_recorded(tmp_path, data, monkeypatch) -> None:
    # what SGD at --lr 1e38 did to efficientnet_lite0 (16 of 296 tensors NaN/inf, the loss of the step
    # still finite): here the step's own overflow is made certain by poisoning one weight right after it
    import alignbench.training._train as loop

    real = loop.clamp_positions

    def overflowed(model):
        next(model.parameters()).data.fill_(float("inf"))
        return real(model)

    monkeypatch.setattr(loop, "clamp_positions", overflowed)
    db, out = _db(tmp_path), tmp_path / "nan"
    line = _one_line_error(_train(data, out, db), "step 1 left 1 of", "non-finite", "no checkpoint was written")
    assert "intact" not in line
    assert not (out / "last.safetensors").exists() and not (out / "last.pt").exists()
    with open_store(db) as store, store.session() as session:
        assert q.trained_models(session) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--opt", "adamw", "--lr", "1e38"), "overflows float32"),  # Adam's step size lr / (1 - β1) is past float32
        (("--opt", "sgd", "--lr", "1e39"), "beyond float32"),
    ],
)
def test_a_learning_rate_float32_cannot_take_is_one_line(tmp_path, data, options, message) -> None:
    line = _one_line_error(_train(data, tmp_path / "big", _db(tmp_path), *options), message)
    assert "intact" not in line and not (tmp_path / "big" / "last.safetensors").exists()


def test_a_diverged_loss_says_truly_that_no_checkpoint_exists_in_one_line(tmp_path, data) -> None:
    result = _train(data, tmp_path / "div", _db(tmp_path), "--opt", "sgd", "--lr", "1e12", "--steps", "3")
    line = _one_line_error(result, "the loss is nan", "no checkpoint was written")
    assert "intact" not in line and "UserWarning" not in result.stderr


# --------------------------------------------------------------------------------- 10: TAG@best


def test_tag_at_best_is_recorded_when_the_best_step_is_the_last(tmp_path, data) -> None:
    db = _db(tmp_path)
    # one step and --val: the only evaluation after training is the best, so best = last
    result = _train(data, tmp_path / "b", db, "--tag", "bl", "--val", str(data), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_step"] == summary["steps"] == 1 and summary["best_fingerprint"] == summary["fingerprint"]
    assert _tagged(db, "bl@best") == (summary["fingerprint"], ["bl", "bl@best"])
    assert trained_request("bl@best", db).tag == "bl@best"


# ------------------------------------------------------------------------------------ extending a run


def _request(tmp_path: Path, data: Path, **options) -> TrainRequest:
    model = ModelRequest("test_efficientnet", pretrained=False)
    defaults = dict(model=model, data=data, out=tmp_path / "run", batch_size=4, img_size=64, workers=0, sched="cosine", lr=0.05)
    return TrainRequest(**{**defaults, **options})


def _rates(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in records if r["event"] == "step"}


def test_resume_with_more_steps_extends_the_run_on_the_schedule_planned_for_the_new_length(tmp_path, data) -> None:
    db = _db(tmp_path)
    short = train(_request(tmp_path, data, steps=2, out=tmp_path / "ext"), db=db)
    extended = train(_request(tmp_path, data, steps=4, out=tmp_path / "ext", resume=short.out / "last.pt"), db=db)
    assert extended.steps == 4 and extended.resumed_from == 2 and extended.extended_from == 2
    assert extended.lineage["extended"] == {"planned_steps": 2, "replanned_at_step": 2, "steps": 4}
    train(_request(tmp_path, data, steps=4, out=tmp_path / "planned"), db=f"sqlite:///{tmp_path / 'other.db'}")
    steps = _rates(tmp_path / "ext")
    assert sorted(steps) == [1, 2, 3, 4]  # each step logged once
    # from the resumed step on, the rates are those of a run planned for 4 steps (the same timm formula,
    # evaluated at the same step: equal up to float64 rounding of a cosine)
    for step in (3, 4):
        assert steps[step] == pytest.approx(_rates(tmp_path / "planned")[step], rel=1e-12)
    assert steps[2] != pytest.approx(_rates(tmp_path / "planned")[2], rel=1e-12)  # before it, the 2-step plan's
    assert _tagged(db, "ext")[0] == extended.fingerprint  # the tag follows the file the extension overwrote


def test_resume_with_fewer_steps_than_the_checkpoint_took_is_refused(tmp_path, data) -> None:
    db = _db(tmp_path)
    done = _train(data, tmp_path / "r", db, "--steps", "2")
    assert done.exit_code == 0
    refused = _train(data, tmp_path / "r", db, "--resume", str(tmp_path / "r" / "last.pt"))  # --steps 1
    _one_line_error(refused, "is at step 2, past the 1 steps asked for", "--steps 2")


def test_the_summary_says_the_run_was_extended(tmp_path, data) -> None:
    db = _db(tmp_path)
    assert _train(data, tmp_path / "s", db, "--steps", "1").exit_code == 0
    result = _train(data, tmp_path / "s", db, "--steps", "2", "--resume", str(tmp_path / "s" / "last.pt"))
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "extended from a run planned for 1 steps" in text or "extended from a run planned for 1" in text


# ------------------------------------------------------------------------------------ 12: small ones


def test_an_empty_training_label_is_named_as_empty(tmp_path) -> None:
    (tmp_path / "d" / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "d" / "images" / name)
    (tmp_path / "d" / "labels.csv").write_text("a.png,1\nb.png,\n")
    result = _train(tmp_path / "d", tmp_path / "out", _db(tmp_path))
    line = _one_line_error(result, "leaves the label of b.png empty")
    assert "-1" not in line
    assert not (tmp_path / "out").exists()


def test_resume_of_a_file_that_is_no_checkpoint_is_our_one_line(tmp_path, data) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    line = _one_line_error(_train(data, tmp_path / "out", _db(tmp_path), "--resume", str(junk)), "is not a training checkpoint")
    assert "weights_only" not in line
    assert not (tmp_path / "out").exists()  # a refused train leaves no --out


def test_log_holds_each_step_once_after_a_kill_and_resume(tmp_path, data) -> None:
    out = tmp_path / "killed"

    def die_after_step_3(record) -> None:  # the state kill -9 leaves: step 3 logged, its checkpoint never written
        if record.event == "step" and record.step == 3:
            raise SystemExit("killed")

    with pytest.raises(SystemExit):
        train(_request(tmp_path, data, steps=4, checkpoint_every=2, out=out), db=_db(tmp_path), progress=die_after_step_3)
    assert sorted(_rates(out)) == [1, 2, 3]
    train(_request(tmp_path, data, steps=4, checkpoint_every=2, out=out, resume=out / "last.pt"), db=_db(tmp_path))
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_every_file_in_out_gets_the_same_mode(tmp_path, data) -> None:
    assert _train(data, tmp_path / "m", _db(tmp_path)).exit_code == 0
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "m").iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes["last.safetensors"] == modes["log.jsonl"] == 0o666 & ~umask, modes


def test_train_workers_are_limited_to_the_cores(tmp_path, data) -> None:
    _one_line_error(_train(data, tmp_path / "w", _db(tmp_path), "--workers", "99"), "--workers must be between 0 and")
    assert not (tmp_path / "w").exists()


def test_positions_lr_on_a_dense_model_is_refused(tmp_path, data) -> None:
    _one_line_error(_train(data, tmp_path / "p", _db(tmp_path), "--positions-lr", "0.1"), "--positions-lr", "add --dcls")

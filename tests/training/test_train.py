"""`alignbench train`: tiny timm models on 64×64 data — the loss falls, positions move and stay inside the
kernel, --resume is exact, lineage round-trips, and every bad input is one line before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.errors import TrainingError
from alignbench.models import ModelRequest, load_model
from alignbench.testing.tolerance import float32_bound, float32_relative, network_relative
from alignbench.training import POSITIONS_OFFSET, TrainRequest, open_training_data, param_groups, position_parameters, train
from alignbench.training._checkpoint import STATE_FILE, atomic_write, prepare_out, rng_state, set_rng_state
from alignbench.training._data import TrainingImages
from alignbench.training._objective import Distillation

runner = CliRunner()
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")  # ImageNet-1k classes 0, 1, 2, 3
TINY = ModelRequest("test_efficientnet", pretrained=False)
TINY_DCLS = ModelRequest("test_efficientnet", dcls=True, pretrained=False, init="from-dense")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # 64×64 tensors gain nothing from a second intra-op thread, and on a shared machine its spinning
    # costs up to 3× (measured here under load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _image(rng: np.random.Generator, label: int) -> Image.Image:
    # each class its own colour, plus noise: learnable in a few steps
    base = np.array([[60, 60, 60], [200, 60, 60], [60, 200, 60], [60, 60, 200]][label], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 25, (72, 80, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """An ImageFolder tree: 4 ImageNet wnid folders × 4 images."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for label, wnid in enumerate(WNIDS):
        (root / wnid).mkdir()
        for i in range(4):
            _image(rng, label).save(root / wnid / f"{wnid}_{i}.png")
    return root


def _request(tmp_path: Path, data: Path, **options) -> TrainRequest:
    defaults = dict(model=TINY, data=data, out=tmp_path / "run", steps=2, batch_size=8, img_size=64, workers=0, lr=1e-2)
    return TrainRequest(**{**defaults, **options})


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _losses(out: Path) -> list[float]:
    return [record["loss"] for record in _log(out) if record["event"] == "step"]


# ------------------------------------------------------------------------------------------ data


def test_image_folder_of_wnids_takes_imagenet_indices(image_folder) -> None:
    images = open_training_data(image_folder)
    assert images.layout == "imagefolder" and len(images) == 16
    assert images.classes == (0, 1, 2, 3)
    assert [path.parent.name for path in images.files[:4]] == [WNIDS[0]] * 4


def test_image_folder_of_other_names_takes_sorted_ranks(tmp_path) -> None:
    for name in ("zebra", "apple"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "a.png")
    images = open_training_data(tmp_path)
    assert dict(zip((p.parent.name for p in images.files), images.labels)) == {"apple": 0, "zebra": 1}


def test_folder_layout_reads_a_header_naming_the_label_column(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / name)
    (tmp_path / "labels.csv").write_text("filename,wnid,class_index,name\na.jpg,n01440764,0,tench\nb.jpg,n01443537,1,goldfish\n")
    images = open_training_data(tmp_path)
    assert images.layout == "folder" and images.labels == (0, 1)


def test_the_embedded_sample_trains_too() -> None:
    images = open_training_data("sample")
    assert len(images) == 10 and images.labels[0] == 495


def test_a_sample_is_the_same_whatever_the_global_generators(image_folder) -> None:
    from timm.data import create_transform

    dataset = TrainingImages(open_training_data(image_folder), create_transform(64, is_training=True), seed=3, composites=True)
    torch.manual_seed(0)
    first = dataset[(2, 5)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    second = dataset[(2, 5)]
    assert torch.equal(torch.get_rng_state(), state)  # drawing a sample leaves the global generator alone
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["composite"], second["composite"])
    assert not torch.equal(first["image"], dataset[(3, 5)]["image"])  # another epoch, another augmentation
    top, left = divmod(first["quadrant"], 2)
    assert torch.equal(first["composite"][:, top * 64 : top * 64 + 64, left * 64 : left * 64 + 64], first["image"])


# ----------------------------------------------------------------------------------- parameters


def test_positions_have_their_own_group_without_weight_decay() -> None:
    model = load_model(TINY_DCLS)
    groups = {group["group_name"]: group for group in param_groups(model, weight_decay=0.05, positions_lr=0.7)}
    positions = {id(p) for p in position_parameters(model)}
    assert {id(p) for p in groups["positions"]["params"]} == positions and positions
    assert groups["positions"]["weight_decay"] == 0.0 and groups["positions"]["lr"] == 0.7
    assert groups["decay"]["weight_decay"] == 0.05
    assert all(p.ndim > 1 for p in groups["decay"]["params"])
    assert all(p.ndim <= 1 for p in groups["no_decay"]["params"])
    every = [id(p) for group in groups.values() for p in group["params"]]
    assert len(every) == len(set(every)) == len({id(p) for p in model.parameters()})  # shared P once


def test_random_generators_round_trip() -> None:
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(), __import__("random").random())
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0]) and np.random.rand() == expected[1] and __import__("random").random() == expected[2]


# -------------------------------------------------------------------------------------- training


def test_the_loss_decreases(tmp_path, image_folder) -> None:
    result = train(_request(tmp_path, image_folder, steps=6, batch_size=16, aug=False, lr=3e-3), db=f"sqlite:///{tmp_path / 's.db'}")
    losses = _losses(result.out)
    assert len(losses) == 6 and result.steps == 6
    assert losses[-1] < losses[0] - 0.05
    assert result.method == "finetune" and result.trainable_parameters == result.total_parameters


@pytest.fixture(scope="module")
def positions_run(tmp_path_factory, image_folder):
    """DCLS positions only, with a rate large enough to push elements against the kernel's edge."""
    tmp = tmp_path_factory.mktemp("positions")
    db = f"sqlite:///{tmp / 's.db'}"
    request = _request(tmp, image_folder, model=TINY_DCLS, steps=3, positions_lr=10.0, tag="tiny-pos", val=image_folder)
    return request, train(request, db=db), db


def test_positions_move_and_stay_inside_the_dilated_kernel(positions_run) -> None:
    request, result, _ = positions_run
    parent, trained = load_model(TINY_DCLS), load_model(replace(TINY_DCLS, checkpoint=result.last, init=None))
    assert result.method == "dcls-finetune" and result.trainable_parameters == result.trainable_positions > 0
    moved = False
    for before, after in zip(position_parameters(parent), position_parameters(trained)):
        limit = 17 // 2  # the generic recipe's 17×17 span
        assert float(after.detach().abs().max()) <= limit
        moved |= not torch.equal(before, after)
    assert moved and result.positions_shift_max > 1.0
    assert sum(record.get("clamped", 0) for record in _log(result.out)) > 0  # some hit the edge and were clamped
    # every other weight stayed exactly the parent's
    for (name, a), (_, b) in zip(parent.state_dict().items(), trained.state_dict().items()):
        if not name.endswith((".P", ".SIG")):
            assert torch.equal(a, b), name


def test_lineage_round_trips_through_the_store(positions_run) -> None:
    request, result, db = positions_run
    listed = runner.invoke(app, ["models", "--trained", "--json", "--db", db])
    assert listed.exit_code == 0, listed.output
    rows = {row["tag"]: row for row in json.loads(listed.stdout)}
    row = rows["tiny-pos"]
    assert row["origin"] == "dcls-finetune" and row["dcls"] and row["fingerprint"] == result.fingerprint
    assert row["parent_fingerprint"] == result.parent_fingerprint and row["parent_dcls"]
    lineage = row["lineage"]
    assert lineage["parent"] == result.parent_fingerprint and lineage["data"] == result.data_fingerprint
    assert lineage["steps"] == 3 and lineage["checkpoint"] == str(result.last) and lineage["method"] == "dcls-finetune"
    assert lineage["hyper_parameters"]["positions_lr"] == 10.0 and lineage["hyper_parameters"]["freeze"] == "all-but-positions"
    assert lineage["final_loss"] == result.final_loss and lineage["top1_before"] is not None  # JSON keeps a float exactly
    # score --trained loads exactly what was recorded: the checkpoint's weights, fingerprint and all
    from alignbench.models import model_identity
    from alignbench.scoring import trained_request

    assert model_identity(trained_request("tiny-pos", db)).fingerprint == result.fingerprint
    assert json.loads((result.out / "train.json").read_text())["fingerprint"] == result.fingerprint


def test_resume_reaches_exactly_the_uninterrupted_state(tmp_path, image_folder) -> None:
    # 16 images, 4 per step: the interruption falls mid-epoch, the run crosses an epoch boundary
    options = dict(model=TINY_DCLS, steps=6, batch_size=4, freeze="none", positions_lr=0.3, gc_consistency=0.0, warmup_steps=2)
    whole = train(_request(tmp_path / "whole", image_folder, **options), db=f"sqlite:///{tmp_path / 'a.db'}")

    def stop_after_three(record) -> None:
        if record.event == "step" and record.step == 3:
            raise KeyboardInterrupt

    interrupted = _request(tmp_path / "parts", image_folder, **options)
    with pytest.raises(TrainingError, match="continue with --resume"):
        train(interrupted, db=f"sqlite:///{tmp_path / 'b.db'}", progress=stop_after_three)
    resumed = train(replace(interrupted, resume=interrupted.out / STATE_FILE), db=f"sqlite:///{tmp_path / 'b.db'}")
    assert resumed.resumed_from == 3 and resumed.steps == 6
    a = torch.load(whole.out / STATE_FILE, weights_only=True)
    b = torch.load(resumed.out / STATE_FILE, weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert _losses(whole.out) == _losses(resumed.out)  # steps 1-3 before, 4-6 after the resume: the same curve
    assert a["scheduler"] == b["scheduler"]
    assert resumed.fingerprint == whole.fingerprint  # bit-identical weights: one model in the store


def test_gc_consistency_with_global_max_pooling_is_recorded_in_the_checkpoint(tmp_path, image_folder) -> None:
    result = train(
        _request(tmp_path, image_folder, steps=1, batch_size=4, gc_consistency=25.0, maxpool=True), db=f"sqlite:///{tmp_path / 's.db'}"
    )
    (record,) = [r for r in _log(result.out) if r["event"] == "step"]
    assert set(record["terms"]) == {"ce", "gc"} and record["terms"]["gc"] > 0
    # the float32 loss is 1·ce + 25·gc of these same values (≥ 0): ≤ 3 roundings apart from the recompute
    assert record["loss"] == pytest.approx(record["terms"]["ce"] + 25.0 * record["terms"]["gc"], rel=float32_relative(3))
    assert result.method == "gc-consistency"
    model = load_model(replace(TINY, checkpoint=result.last))
    assert isinstance(model.global_pool.pool, torch.nn.AdaptiveMaxPool2d)


def test_distillation_from_the_dense_original(tmp_path, image_folder, monkeypatch) -> None:
    seen = []
    distil = Distillation.__call__

    def recording(term, forward):
        with torch.no_grad():
            seen.append((forward.logits.detach().clone(), term.teacher(forward.images), forward.images.clone(), term.teacher))
        return distil(term, forward)

    monkeypatch.setattr(Distillation, "__call__", recording)
    result = train(
        _request(tmp_path, image_folder, model=TINY_DCLS, steps=1, batch_size=4, distill_from="dense"), db=f"sqlite:///{tmp_path / 's.db'}"
    )
    (record,) = [r for r in _log(result.out) if r["event"] == "step"]
    assert set(record["terms"]) == {"ce", "distill"}
    # from-dense computes the dense function exactly (kernel_error 0), then training moves the v1 positions
    # POSITIONS_OFFSET = η off the grid: each of the converted layers' taps gives η of itself to a
    # neighbour (≤ 2η of the layer's Σ|terms|), carried to the logits at the head's scale Σ|terms| =
    # |features|·|W|ᵀ + |b| (each stage well conditioned, as network_relative assumes), plus float32
    # rounding, network_relative of the student at that scale (a random-init head cancels to logits far below it)
    (student, teacher_logits, images, teacher) = seen[0]
    with torch.no_grad():
        features = teacher.forward_head(teacher.forward_features(images), pre_logits=True)
        head = teacher.get_classifier()
        scale = float((features.abs() @ head.weight.abs().T + head.bias.abs()).max())
    model = load_model(TINY_DCLS)
    converted = sum(hasattr(m, "dilated_kernel_size") for m in model.modules())  # the Dcls2d layers
    delta = (2 * converted * POSITIONS_OFFSET + network_relative(model)) * scale
    assert float((student - teacher_logits).abs().max()) <= delta
    # KL(p ‖ q) with log-ratios spread over ≤ 2δ is ≤ (2δ)²/8 (Hoeffding's lemma; cruder: ≤ 2δ); plus the
    # KL's own float32: two log-sum-exps of n classes, each within (n + 4)·u, and the per-class
    # subtractions and products (float32_relative(8) of max|log p|). Was < 1e-3, tuned
    n = student.shape[1]
    log_p = torch.log_softmax(teacher_logits.float(), dim=1)
    bound = delta**2 / 2 + float32_bound(n + 8, 1.0) + float32_relative(8) * float(log_p.abs().max())
    assert 0 <= record["terms"]["distill"] <= bound


# ------------------------------------------------------------------------------------- bad input


def _cli(tmp_path: Path, *args: str):
    return runner.invoke(
        app,
        [
            "train",
            "test_efficientnet",
            "--no-pretrained",
            "--img-size",
            "64",
            "--workers",
            "0",
            "--steps",
            "1",
            "--batch-size",
            "4",
            "--db",
            f"sqlite:///{tmp_path / 's.db'}",
            *args,
        ],
    )


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_a_folder_without_classes_or_images(tmp_path) -> None:
    empty = tmp_path / "empty"
    (empty / "n01440764").mkdir(parents=True)
    _one_line_error(_cli(tmp_path, "--data", str(empty), "--out", str(tmp_path / "o")), "no class folder with images")
    (tmp_path / "flat" / "images").mkdir(parents=True)
    (tmp_path / "flat" / "labels.csv").write_text("filename,label\n")
    _one_line_error(_cli(tmp_path, "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "o")), "no image in")
    _one_line_error(_cli(tmp_path, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")), "is not a directory")
    assert not (tmp_path / "o" / STATE_FILE).exists() and not (tmp_path / "s.db").exists()


def test_labels_outside_the_models_classes(tmp_path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data / "images" / "a.png")
    (data / "labels.csv").write_text("a.png,1000\n")
    _one_line_error(_cli(tmp_path, "--data", str(data), "--out", str(tmp_path / "o")), "label 1000", "1000 classes")
    assert not (tmp_path / "o" / STATE_FILE).exists()


def test_a_teacher_with_another_label_space(tmp_path, image_folder) -> None:
    result = _cli(
        tmp_path, "--data", str(image_folder), "--out", str(tmp_path / "o"), "--distill-from", "vit_tiny_patch16_224.augreg_in21k"
    )
    _one_line_error(result, "teacher predicts 21843 classes")
    assert not (tmp_path / "o" / STATE_FILE).exists()


def test_resume_from_another_model_or_recipe_names_what_differs(tmp_path, image_folder) -> None:
    first = _cli(tmp_path, "--data", str(image_folder), "--out", str(tmp_path / "o"))
    assert first.exit_code == 0, first.output
    state = str(tmp_path / "o" / STATE_FILE)
    before = (tmp_path / "o" / STATE_FILE).read_bytes()
    other_model = runner.invoke(
        app,
        [
            "train",
            "test_resnet",
            "--no-pretrained",
            "--img-size",
            "64",
            "--workers",
            "0",
            "--steps",
            "1",
            "--batch-size",
            "4",
            "--data",
            str(image_folder),
            "--out",
            str(tmp_path / "o"),
            "--resume",
            state,
            "--db",
            f"sqlite:///{tmp_path / 's.db'}",
        ],
    )
    _one_line_error(other_model, "another model or recipe", "model.name: 'test_efficientnet' in the checkpoint, 'test_resnet' now")
    other_recipe = _cli(tmp_path, "--data", str(image_folder), "--out", str(tmp_path / "o"), "--resume", state, "--lr", "0.5")
    _one_line_error(other_recipe, "lr: 0.0001 in the checkpoint, 0.5 now")
    again = _cli(tmp_path, "--data", str(image_folder), "--out", str(tmp_path / "o"))
    _one_line_error(again, "already holds a training run", "--resume")
    assert (tmp_path / "o" / STATE_FILE).read_bytes() == before


def test_an_unwritable_out(tmp_path, image_folder) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    _one_line_error(_cli(tmp_path, "--data", str(image_folder), "--out", str(blocker / "run")), "cannot create --out")
    assert not (tmp_path / "s.db").exists()


def test_kill_9_while_a_checkpoint_is_written_leaves_the_previous_one_whole(tmp_path) -> None:
    path = tmp_path / STATE_FILE
    previous = {"step": torch.tensor(3), "weights": torch.arange(1000.0)}
    atomic_write(path, lambda temporary: torch.save(previous, temporary))
    ready = tmp_path / "ready"
    code = textwrap.dedent(f"""
        import time, torch
        from pathlib import Path
        from alignbench.training._checkpoint import atomic_write

        def write(temporary):
            with open(temporary, "wb") as handle:
                handle.write(b"half a checkpoint")
                handle.flush()
                Path({str(ready)!r}).touch()
                time.sleep(60)

        atomic_write(Path({str(path)!r}), write)
    """)
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["weights"], previous["weights"]) and int(loaded["step"]) == 3
    assert list(tmp_path.glob(".*.tmp"))  # the half-written temporary is all that is left of the killed write
    prepare_out(tmp_path, resume=path).release()  # the next run (here: a resume) clears it away
    assert not list(tmp_path.glob(".*.tmp"))


def test_models_and_score_name_trained_models_by_tag(positions_run) -> None:
    _, result, db = positions_run
    table = runner.invoke(app, ["models", "--trained", "--db", db])
    assert table.exit_code == 0, table.output
    assert "tiny-pos" in table.stdout and "dcls-finetune" in table.stdout
    unknown = runner.invoke(app, ["score", "--trained", "no-such-tag", "--db", db])
    _one_line_error(unknown, "no model tagged 'no-such-tag'", "models --trained")
    other = runner.invoke(app, ["score", "resnet50", "--trained", "tiny-pos", "--db", db])
    _one_line_error(other, "give --trained alone")
    empty = runner.invoke(app, ["models", "--trained", "--json", "--db", f"sqlite:///{result.out / 'none.db'}"])
    assert empty.exit_code == 0 and json.loads(empty.stdout) == [] and not (result.out / "none.db").exists()


def test_resuming_a_finished_run_only_records_it_again(positions_run, tmp_path) -> None:
    request, result, _ = positions_run
    db = f"sqlite:///{tmp_path / 'other.db'}"  # e.g. the store was deleted: train again records it, trains nothing
    before = (result.out / STATE_FILE).read_bytes()
    again = train(replace(request, resume=result.out / STATE_FILE), db=db)
    assert again.steps == 3 and again.resumed_from == 3 and again.fingerprint == result.fingerprint
    assert (result.out / STATE_FILE).read_bytes() == before
    listed = runner.invoke(app, ["models", "--trained", "--json", "--db", db])
    assert "tiny-pos" in {row["tag"] for row in json.loads(listed.stdout)}


def test_freeze_norms_trains_every_weight_but_the_batch_norms_whose_statistics_stay() -> None:
    """--freeze norms: convolutions and classifier train; batch-norm affine parameters and running
    statistics are fixed (the layers stay in eval mode while the rest trains)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from alignbench.training._params import freeze, train_mode
    from alignbench.training._request import FREEZE_MODES

    model = load_model(ModelRequest("test_efficientnet", pretrained=False))
    trainable = freeze(model, FREEZE_MODES["norms"])
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and set(trainable.frozen_norms) == set(norms)
    norm_parameters = {id(p) for m in norms for p in m.parameters()}
    for parameter in model.parameters():
        assert parameter.requires_grad == (id(parameter) not in norm_parameters)
    before = [m.running_mean.clone() for m in norms]
    train_mode(model, trainable)
    model(torch.randn(2, 3, 32, 32) * 3 + 1)
    assert all(not m.training for m in norms) and model.training
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))


def test_the_step_accuracy_of_unlabelled_images_is_agreement_with_the_teacher() -> None:
    """Scenes under --distill-from have no label (-1): the step's accuracy is measured against the
    teacher's top-1 (what the terms train towards), never against -1 (which would read 0)."""
    from alignbench.training._objective import TrainingStep

    model = load_model(ModelRequest("test_efficientnet", pretrained=False)).eval()
    teacher = load_model(ModelRequest("test_efficientnet", pretrained=False)).eval()
    images = torch.randn(4, 3, 32, 32)
    step = TrainingStep(model, [Distillation(teacher=teacher)])
    output = step({"image": images, "label": torch.tensor([-1, 3, -1, -1])})
    with torch.no_grad():
        top1 = teacher(images).argmax(dim=1)
    assert output["labels"].tolist() == [int(top1[0]), 3, int(top1[2]), int(top1[3])]
    labelled = TrainingStep(model, [Distillation(teacher=teacher)])({"image": images, "label": torch.tensor([1, 2, 3, 4])})
    assert labelled["labels"].tolist() == [1, 2, 3, 4]

"""The neural harmonizer (Fel et al. 2022): serre-lab/Harmonization's TF loss transcribed, the pyramid's
'SAME' padding, training towards human maps, --distill-from self, lineage and an exact resume."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.errors import TrainingError
from alignbench.models import ModelRequest
from alignbench.testing.tolerance import float32_relative
from alignbench.training import TrainRequest, harmonizer_loss, train
from alignbench.training._checkpoint import STATE_FILE
from alignbench.training._harmonizer import check_input_gradient, downsample, pyramid, same_padding
from alignbench.training._objective import TrainingStep

runner = CliRunner()
TINY = ModelRequest("test_efficientnet", pretrained=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------- serre-lab/Harmonization, transcribed call by call (NHWC, as TF)


def _tf_reduce_mean(x, axes=None, keepdims=False):
    return x.mean() if axes is None else x.mean(dim=axes, keepdim=keepdims)


def _tf_reduce_std(x, axes, keepdims):
    # tf.math.reduce_std: sqrt(reduce_mean(square(x - reduce_mean(x))))  (population)
    mean = _tf_reduce_mean(x, axes, keepdims=True)
    return torch.sqrt(_tf_reduce_mean(torch.square(x - mean), axes, keepdims))


def _tf_standardize_cut(heatmaps, axes=(1, 2), epsilon=1e-5):
    means = _tf_reduce_mean(heatmaps, axes, keepdims=True)
    stds = _tf_reduce_std(heatmaps, axes, keepdims=True)
    heatmaps = heatmaps - means
    heatmaps = heatmaps / (stds + epsilon)
    return torch.relu(heatmaps)


def _tf_conv2d_same_stride2(image, kernel):
    """tf.nn.conv2d(image [B, H, W, 1], kernel [5, 5, 1, 1], strides 2, padding='SAME'), from TF's documented
    formula: out = ceil(in / s); pad_along = max((out - 1)·s + k - in, 0); pad_top = pad_along // 2, the rest after;
    the output pixel (i, j) is Σ_uv kernel[u, v] · padded[2i + u, 2j + v] (a cross-correlation)."""
    _, height, width, _ = image.shape
    out_h, out_w = math.ceil(height / 2), math.ceil(width / 2)
    pad_h = max((out_h - 1) * 2 + 5 - height, 0)
    pad_w = max((out_w - 1) * 2 + 5 - width, 0)
    padded = F.pad(image, (0, 0, pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    out = 0
    for u in range(5):
        for v in range(5):
            out = out + kernel[u, v, 0, 0] * padded[:, u : u + 2 * out_h - 1 : 2, v : v + 2 * out_w - 1 : 2, :]
    return out


def _tf_binomial_kernel():
    kernel = np.array((1.0, 4.0, 6.0, 4.0, 1.0), dtype=np.float32)
    kernel = np.outer(kernel, kernel)
    kernel /= np.sum(kernel)
    return torch.from_numpy(kernel[:, :, np.newaxis, np.newaxis])  # * tf.eye(1)


def _tf_pyramidal_representation(image, num_levels):
    kernel = _tf_binomial_kernel()
    levels = [image]
    for _ in range(num_levels):
        image = _tf_conv2d_same_stride2(image, kernel)
        levels.append(image)
    return levels


def _tf_mse_with_tokens(heatmaps_a, heatmaps_b, tokens):
    return _tf_reduce_mean(torch.square(heatmaps_a - heatmaps_b) * tokens[:, None, None, None])


def _tf_pyramidal_mse_with_tokens(true_heatmaps, predicted_heatmaps, tokens, nb_levels=5):
    pyramid_y = _tf_pyramidal_representation(true_heatmaps[:, :, :, None], nb_levels)
    pyramid_y_pred = _tf_pyramidal_representation(predicted_heatmaps[:, :, :, None], nb_levels)
    return _tf_reduce_mean(torch.stack([_tf_mse_with_tokens(pyramid_y[i], pyramid_y_pred[i], tokens) for i in range(nb_levels)]))


def _tf_categorical_crossentropy(labels, logits, label_smoothing=0.1):
    # keras CategoricalCrossentropy(from_logits=True, label_smoothing, reduction NONE)
    num_classes = labels.shape[-1]
    labels = labels * (1.0 - label_smoothing) + label_smoothing / num_classes
    return -(labels * torch.log_softmax(logits, dim=-1)).sum(-1)


def _tf_harmonizer_loss(model, images_nhwc, tokens, labels, true_heatmaps, lambda_weights=1e-5, lambda_harmonization=1.0):
    """loss.harmonizer_loss up to the loss (the parameters' gradients are then taken from it). Torch names
    stand for the keras variable names: 'bn' for 'bn/', and the rest of the filter as written."""
    images_nhwc = images_nhwc.detach().requires_grad_(True)  # tape.watch(images)
    y_pred = model(images_nhwc.permute(0, 3, 1, 2))  # model(images, training=True)
    loss_metapred = torch.sum(y_pred * labels, -1)
    (sa_maps,) = torch.autograd.grad(loss_metapred.sum(), images_nhwc, create_graph=True)  # tape.gradient of a vector: its sum
    sa_maps = _tf_reduce_mean(sa_maps.float(), -1)
    sa_maps_preprocess = _tf_standardize_cut(sa_maps)
    heatmaps_preprocess = _tf_standardize_cut(true_heatmaps)
    _hm_max = torch.amax(heatmaps_preprocess, (1, 2), keepdim=True) + 1e-6
    _sa_max = torch.amax(sa_maps_preprocess, (1, 2), keepdim=True).detach() + 1e-6
    heatmaps_preprocess = heatmaps_preprocess / _hm_max * _sa_max
    harmonization_loss = _tf_pyramidal_mse_with_tokens(sa_maps_preprocess, heatmaps_preprocess, tokens)
    cce_loss = _tf_reduce_mean(_tf_categorical_crossentropy(labels, y_pred))
    weight_loss = sum(
        torch.sum(v**2) / 2  # tf.nn.l2_loss
        for name, v in model.named_parameters()
        if v.requires_grad
        and "bn" not in name
        and "normalization" not in name
        and "embed" not in name
        and "Norm" not in name
        and "norm" not in name
        and "class_token" not in name
    )
    loss = cce_loss + weight_loss * lambda_weights + harmonization_loss * lambda_harmonization
    return loss, {"ce": cce_loss, "weights": weight_loss, "harmonization": harmonization_loss}


# ---------------------------------------------------------------------------------------------- data


def _blob(height: int, width: int, row: float, col: float, sigma: float) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    return torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2))


def _batch(size: int = 64, count: int = 4):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(count, 3, size, size, generator=generator)
    maps = torch.stack([_blob(size, size, 10 + 12 * i, 50 - 11 * i, 6.0) for i in range(count)])
    labels = torch.tensor([3, 1, 4, 1][:count])
    return images, maps, labels


def _tiny_model(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", pretrained=False, num_classes=classes).train()


# ------------------------------------------------------------------------------------------ the loss


def _gradients(loss, model):
    params = [p for p in model.parameters() if p.requires_grad]
    # the pyramid term does not reach every parameter (the classifier's bias moves no saliency): zeros there
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _assert_gradients_close(ours, theirs, rtol):
    """max |ours − theirs| over every parameter within ``rtol`` of the largest gradient (a parameter whose
    gradient is 0 in exact arithmetic, such as the classifier's bias in the pyramid term, holds rounding only)."""
    scale = max(float(b.abs().max()) for b in theirs)
    error = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    assert error <= rtol * scale, (error, scale)


def test_the_loss_equals_the_tf_code_transcribed_including_an_image_without_a_map() -> None:
    model = _tiny_model()
    images, maps, labels = _batch()
    has_map = torch.tensor([1.0, 1.0, 0.0, 1.0])
    ours_maps = maps.clone()
    ours_maps[2] = float("nan")  # no map: has_map (None) is 0 where the map is not finite
    loss, parts = harmonizer_loss(model, images, labels, ours_maps)
    ours = _gradients(loss, model)

    theirs_maps = maps.clone()
    theirs_maps[2] = 0.0
    one_hot = F.one_hot(labels, 10).float()
    their_loss, their_parts = _tf_harmonizer_loss(model, images.permute(0, 2, 3, 1), has_map, one_hot, theirs_maps)
    theirs = _gradients(their_loss, model)
    # the precision: float32 evaluations of the same operations in a few different orders
    # (NCHW vs NHWC means, conv2d vs 25 shifted sums) stay orders of magnitude inside these
    assert float(loss.detach()) == pytest.approx(float(their_loss.detach()), rel=1e-5)
    for name in ("ce", "weights", "harmonization"):
        assert float(parts[name]) == pytest.approx(float(their_parts[name].detach()), rel=1e-5), name
    assert float(parts["harmonization"]) > 0
    _assert_gradients_close(ours, theirs, 1e-4)

    # the second-order part is there: the gradient of λ·pyramid alone is the transcription's too
    loss_h, _ = harmonizer_loss(model, images, labels, ours_maps, lambda_weights=0.0, lambda_harmonization=1.0)
    ce_only, _ = harmonizer_loss(model, images, labels, ours_maps, lambda_weights=0.0, lambda_harmonization=0.0)
    ours_h = [a - b for a, b in zip(_gradients(loss_h, model), _gradients(ce_only, model))]
    _, their_parts = _tf_harmonizer_loss(model, images.permute(0, 2, 3, 1), has_map, one_hot, theirs_maps)
    theirs_h = _gradients(their_parts["harmonization"], model)
    assert max(float(g.abs().max()) for g in theirs_h) > 0
    _assert_gradients_close(ours_h, theirs_h, 1e-4)


def test_the_comparison_tells_tfs_population_std_from_torchs_default(monkeypatch) -> None:
    # with the unbiased std (torch's default) in the transcription, the pyramid term moves far beyond 1e-5
    model = _tiny_model()
    images, maps, labels = _batch()
    _, parts = harmonizer_loss(model, images, labels, maps)
    monkeypatch.setitem(globals(), "_tf_reduce_std", lambda x, axes, keepdims: x.std(dim=axes, keepdim=keepdims))
    _, theirs = _tf_harmonizer_loss(model, images.permute(0, 2, 3, 1), torch.ones(4), F.one_hot(labels, 10).float(), maps)
    assert abs(float(parts["harmonization"]) / float(theirs["harmonization"].detach()) - 1) > 10 * 1e-5


def test_teacher_logits_replace_the_cross_entropy_and_give_the_label() -> None:
    model = _tiny_model()
    images, maps, _ = _batch()
    teacher = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
    loss, parts = harmonizer_loss(model, images, None, maps, teacher_logits=teacher)
    top1 = teacher.argmax(1)
    _, their_parts = _tf_harmonizer_loss(model, images.permute(0, 2, 3, 1), torch.ones(4), F.one_hot(top1, 10).float(), maps)
    with torch.no_grad():
        logits = model(images)
    kl = (torch.softmax(teacher, 1) * (torch.log_softmax(teacher, 1) - torch.log_softmax(logits, 1))).sum(1).mean()
    assert set(parts) == {"distill", "weights", "harmonization"}
    assert float(parts["distill"]) == pytest.approx(float(kl), rel=1e-5)
    assert float(parts["harmonization"]) == pytest.approx(float(their_parts["harmonization"].detach()), rel=1e-5)
    with pytest.raises(TrainingError, match="not both"):
        harmonizer_loss(model, images, top1, maps, teacher_logits=teacher)


@pytest.mark.parametrize("size", [5, 6, 7, 8, 13, 14, 224])
def test_same_padding_is_tfs_on_odd_and_even_sizes(size) -> None:
    # TF: 1 before and 2 after for an even size at stride 2 with a 5-tap kernel, 2 and 2 for an odd one
    assert same_padding(size) == ((1, 2) if size % 2 == 0 else (2, 2))
    generator = torch.Generator().manual_seed(size)
    image = torch.rand(2, size, size + 1, generator=generator)  # one odd and one even side
    ours = downsample(image)
    theirs = _tf_conv2d_same_stride2(image[..., None], _tf_binomial_kernel())[..., 0]
    assert ours.shape == theirs.shape == (2, math.ceil(size / 2), math.ceil((size + 1) / 2))
    # 25 products of values ≤ 1 with weights summing to 1, in two orders
    torch.testing.assert_close(ours, theirs, rtol=0, atol=25 * torch.finfo(torch.float32).eps * 2)
    assert [tuple(level.shape[-2:]) for level in pyramid(torch.rand(1, 224, 224), 5)] == [
        (224, 224),
        (112, 112),
        (56, 56),
        (28, 28),
        (14, 14),
    ]


def _pyramid_terms(lambda_harmonization: float, steps: int = 8) -> list[float]:
    model = _tiny_model()
    images, maps, labels = _batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-5)
    terms = []
    for _ in range(steps + 1):
        loss, parts = harmonizer_loss(model, images, labels, maps, lambda_harmonization=lambda_harmonization)
        terms.append(float(parts["harmonization"]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return terms


def test_a_few_steps_lower_the_pyramid_term() -> None:
    harmonized, control = _pyramid_terms(10.0), _pyramid_terms(0.0)
    assert harmonized[0] == control[0]
    assert harmonized[-1] < 0.9 * harmonized[0], harmonized
    assert harmonized[-1] < control[-1], (harmonized, control)  # the human maps' doing, not the cross-entropy's


def test_the_training_step_computes_harmonizer_loss() -> None:
    from alignbench.training._harmonizer import harmonizer_terms

    model = _tiny_model()
    images, maps, labels = _batch()
    request = TrainRequest(model=TINY, data=None, dataset="folder", out=Path("unused"), harmonize=2.0)
    step = TrainingStep(model, harmonizer_terms(request, None))
    output = step({"image": images, "label": labels, "reference": maps, "has_map": torch.ones(4)})
    loss, parts = harmonizer_loss(model, images, labels, maps, lambda_harmonization=2.0)
    assert set(output["terms"]) == set(parts)
    for name, value in parts.items():  # the same operations in the same order
        assert float(output["terms"][name]) == float(value), name
    # the weighted sum of the same three values, added in another order: a few float32 roundings
    assert float(output["loss"].detach()) == pytest.approx(float(loss.detach()), rel=float32_relative(4))

    # λ = 0, the control: the pyramid term is logged (same value), the loss is the rest, and it trains
    control = TrainingStep(model, harmonizer_terms(replace(request, harmonize=0.0), None))
    output = control({"image": images, "label": labels, "reference": maps, "has_map": torch.ones(4)})
    assert float(output["terms"]["harmonization"]) == float(parts["harmonization"])  # the same saliency, without its graph
    output["loss"].backward()
    assert model.get_classifier().weight.grad is not None


class _Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _tiny_model()

    def forward(self, x):
        return self.net(x.detach())


def test_a_model_without_a_differentiable_input_path_is_refused() -> None:
    with pytest.raises(TrainingError, match="no differentiable path from its input"):
        check_input_gradient(_Detached(), (64, 64), "detached")
    check_input_gradient(_tiny_model(), (64, 64), "tiny")


# ------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def heatmap_folder(tmp_path_factory) -> Path:
    """The `folder` dataset layout: 8 images with a heatmap each (a blob where a bright square is), no labels."""
    root = tmp_path_factory.mktemp("maps")
    (root / "images").mkdir()
    (root / "heatmaps").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 80, (72, 72, 3)).astype(np.uint8)
        row, col = 12 + 6 * i, 60 - 6 * i
        pixels[row - 6 : row + 6, col - 6 : col + 6] = 230
        Image.fromarray(pixels).save(root / "images" / f"im{i}.png")
        np.save(root / "heatmaps" / f"im{i}.npy", _blob(72, 72, row, col, 8.0).numpy())
    return root


def _request(tmp_path: Path, folder: Path, **options) -> TrainRequest:
    defaults = dict(
        model=TINY,
        data=None,
        dataset="folder",
        data_dir=folder,
        out=tmp_path / "run",
        harmonize=1.0,
        distill_from="self",
        steps=2,
        batch_size=4,
        img_size=64,
        workers=0,
        lr=1e-3,
    )
    return TrainRequest(**{**defaults, **options})


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_distill_from_self_keeps_the_parent_frozen_and_the_lineage_says_harmonizer(tmp_path, heatmap_folder, monkeypatch) -> None:
    from alignbench.models import load_model
    from alignbench.training import _train

    steps = []
    monkeypatch.setattr(_train, "TrainingStep", lambda model, terms: steps.append(TrainingStep(model, terms)) or steps[-1])
    db = f"sqlite:///{tmp_path / 's.db'}"
    result = train(_request(tmp_path, heatmap_folder, steps=3), db=db)
    (step,) = steps
    teacher = step.terms[0].teacher
    assert step.terms[-1].teacher is teacher and teacher is not step.model
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    parent = load_model(TINY)  # the same seeded initialisation
    for key, value in parent.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value), key  # weights and batch-norm statistics untouched
    moved = any(not torch.equal(step.model.state_dict()[k].cpu(), v) for k, v in parent.state_dict().items())
    assert moved
    records = [r for r in _log(result.out) if r["event"] == "step"]
    assert set(records[0]["terms"]) == {"distill", "weights", "harmonization"}
    assert result.method == "harmonizer"
    assert result.lineage["harmonize"] == 1.0
    maps = result.lineage["human_maps"]
    assert maps["dataset"] == "folder" and maps["location"] == str(heatmap_folder.resolve()) and maps["images"] == 8
    listed = runner.invoke(app, ["models", "--trained", "--json", "--db", db])
    assert listed.exit_code == 0, listed.output
    row = {row["tag"]: row for row in json.loads(listed.stdout)}[result.tag]
    assert row["origin"] == "harmonizer" and row["lineage"]["human_maps"] == maps and row["lineage"]["harmonize"] == 1.0
    assert row["lineage"]["hyper_parameters"]["distill_from"] == "self"


def test_resume_is_exact(tmp_path, heatmap_folder) -> None:
    options = dict(steps=4, batch_size=4, warmup_steps=1)
    whole = train(_request(tmp_path / "whole", heatmap_folder, **options), db=f"sqlite:///{tmp_path / 'a.db'}")

    def stop_after_two(record) -> None:
        if record.event == "step" and record.step == 2:
            raise KeyboardInterrupt

    interrupted = _request(tmp_path / "parts", heatmap_folder, **options)
    with pytest.raises(TrainingError, match="continue with --resume"):
        train(interrupted, db=f"sqlite:///{tmp_path / 'b.db'}", progress=stop_after_two)
    resumed = train(replace(interrupted, resume=interrupted.out / STATE_FILE), db=f"sqlite:///{tmp_path / 'b.db'}")
    assert resumed.resumed_from == 2 and resumed.steps == 4
    a = torch.load(whole.out / STATE_FILE, weights_only=True)
    b = torch.load(resumed.out / STATE_FILE, weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    losses = [[r["loss"] for r in _log(out) if r["event"] == "step"] for out in (whole.out, resumed.out)]
    assert losses[0] == losses[1]
    assert resumed.fingerprint == whole.fingerprint


# ------------------------------------------------------------------------------------- bad input


def _cli(tmp_path: Path, *args: str):
    return runner.invoke(
        app,
        ["train", "test_efficientnet", "--no-pretrained", "--img-size", "64", "--workers", "0", "--steps", "1", "--batch-size", "4"]
        + ["--db", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path / "o"), *args],
    )


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_is_one_line_before_any_step(tmp_path, heatmap_folder) -> None:
    no_maps = tmp_path / "nomaps"
    (no_maps / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(no_maps / "images" / "a.png")
    _one_line_error(
        _cli(tmp_path, "--dataset", "folder", "--data-dir", str(no_maps), "--harmonize", "1", "--distill-from", "self"),
        "no reference maps",
        "clickme-val",
    )
    _one_line_error(_cli(tmp_path, "--dataset", "folder", "--data-dir", str(heatmap_folder), "--harmonize", "-1"), "--harmonize", "≥ 0")
    _one_line_error(_cli(tmp_path, "--data", str(heatmap_folder), "--harmonize", "1"), "--dataset")
    _one_line_error(_cli(tmp_path, "--dataset", "folder", "--data-dir", str(heatmap_folder)), "--harmonize")
    _one_line_error(_cli(tmp_path, "--dataset", "folder", "--data-dir", str(heatmap_folder), "--harmonize", "1"), "--distill-from self")
    assert not (tmp_path / "o" / "log.jsonl").exists()


@pytest.mark.parametrize(("size", "stride", "padding", "dilation", "groups"), [(9, 2, 1, 1, 6), (10, 2, 2, 1, 6), (11, 1, 2, 2, 3)])
def test_the_fast_grouped_convolution_has_torchs_first_and_second_derivatives(size, stride, padding, dilation, groups) -> None:
    from alignbench.training._double_backward import grouped_conv_double_backward

    generator = torch.Generator().manual_seed(size)
    x = torch.randn(2, 6, size, size + 1, generator=generator, dtype=torch.float64)
    weight = torch.randn(6, 6 // groups, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=generator, dtype=torch.float64, requires_grad=True)

    def second_order(fast: bool):
        images = x.clone().requires_grad_(True)
        context = grouped_conv_double_backward() if fast else torch.enable_grad()
        with context:
            out = F.conv2d(images, weight, bias, stride, padding, dilation, groups)
            (saliency,) = torch.autograd.grad(out.square().sum(), images, create_graph=True)
        loss = (saliency.sin() * out.mean()).sum()
        return (out.detach(), saliency.detach(), *torch.autograd.grad(loss, (weight, bias)))

    # float64: the same sums in another order, at float64 rounding
    for ours, theirs in zip(second_order(True), second_order(False)):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_the_control_trains_from_the_command_line(tmp_path, heatmap_folder) -> None:
    result = _cli(
        tmp_path, "--dataset", "folder", "--data-dir", str(heatmap_folder), "--harmonize", "0", "--distill-from", "self", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["method"] == "harmonizer" and summary["lineage"]["harmonize"] == 0.0 and summary["steps"] == 1
    (record,) = [r for r in _log(tmp_path / "o") if r["event"] == "step"]
    assert record["terms"]["harmonization"] > 0 and record["loss"] == pytest.approx(
        record["terms"]["distill"] + 1e-5 * record["terms"]["weights"], rel=float32_relative(4)
    )


def test_dcls_positions_alone_train_under_the_harmonizer(tmp_path, heatmap_folder) -> None:
    dcls = ModelRequest("test_efficientnet", dcls=True, pretrained=False, init="from-dense")
    request = _request(tmp_path, heatmap_folder, model=dcls, steps=1, positions_lr=0.1)
    assert request.method.name == "harmonizer" and request.freeze_mode.name == "all-but-positions"
    result = train(request, db=f"sqlite:///{tmp_path / 's.db'}")
    assert result.trainable_parameters == result.trainable_positions > 0 and result.positions_shift_max > 0


def test_the_weight_term_leaves_dcls_positions_out() -> None:
    from alignbench.models import load_model
    from alignbench.training import position_parameters
    from alignbench.training._harmonizer import NOT_WEIGHT_DECAYED, weight_l2

    model = load_model(ModelRequest("test_efficientnet", dcls=True, pretrained=False, init="from-dense"))
    positions = {id(p) for p in position_parameters(model)}
    assert positions
    expected = sum(
        float((p.detach().double() ** 2).sum()) / 2
        for name, p in model.named_parameters()
        if id(p) not in positions and not any(part in name for part in NOT_WEIGHT_DECAYED)
    )
    n = sum(p.numel() for name, p in model.named_parameters() if id(p) not in positions)
    # float32 sums of n squares: relative rounding ≤ n·2⁻²⁴ (a loose bound; pairwise summation is far inside it)
    assert float(weight_l2(model).detach()) == pytest.approx(expected, rel=n * 2**-24)
    # trained alone (--freeze all-but-positions), the positions add nothing to the weight term
    for p in model.parameters():
        p.requires_grad_(id(p) in positions)
    assert float(weight_l2(model).detach()) == 0.0

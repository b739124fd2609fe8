"""Explain image files: read, preprocess with the model's eval transform, explain, write .npy and .png.

This is everything ``alignbench explain`` does; the command only parses options and prints the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from torch import nn

from alignbench._utils.class_names import class_names
from alignbench._utils.paths import check_output_dir
from alignbench.errors import ExplainerError
from alignbench.explainers._explain import check_applicable, explain_batch
from alignbench.explainers._methods import DEFAULT_METHOD, explainer_setting
from alignbench.explainers._split import model_device, model_name, resolve_targets
from alignbench.models import ModelRequest, load_model, resolve_device
from alignbench.models.preprocessing import Preprocessing

OVERLAY_ALPHA = 0.5  # heatmap weight in the overlay PNG
CAPTION_HEIGHT = 18  # pixels of the strip under the overlay that names the predicted class


@dataclass(frozen=True)
class ExplainedFile:
    source: Path
    npy: Path
    png: Path
    prediction: int
    prediction_name: str
    confidence: float  # softmax probability of the predicted class
    target: int  # the class the map explains
    target_name: str


@dataclass
class ExplainedFiles:
    model: str
    method: str
    params: dict[str, Any]
    files: list[ExplainedFile] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, why it could not be read)


def image_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to read, in order: each file as given; a directory's image files (by extension), sorted."""
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    files: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions)
            if not found:
                missing.append((path, "is a directory with no image file in it (looked for .jpg, .png, .webp, … by extension)"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            missing.append((path, "does not exist"))
    return files, missing


def read_image(path: Path) -> Image.Image:
    """The image as RGB; OSError/ValueError (PIL's 'cannot identify image file', truncation) propagate."""
    with Image.open(path) as image:
        return image.convert("RGB")


def eval_transform(pre: Preprocessing) -> tuple[Any, Any]:
    """timm's eval transform split in two: geometry (resize to input/crop_pct, centre crop; PIL in and
    out, the picture the overlay is drawn on) and to-tensor + normalise."""
    from timm.data.transforms_factory import transforms_imagenet_eval

    composed = transforms_imagenet_eval(
        img_size=tuple(pre.input_size), crop_pct=pre.crop_pct, interpolation=pre.interpolation, mean=pre.mean, std=pre.std
    )
    steps = list(composed.transforms)
    return _Compose(steps[:-2]), _Compose(steps[-2:])


class _Compose:
    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps

    def __call__(self, value: Any) -> Any:
        for step in self.steps:
            value = step(value)
        return value


def model_preprocessing(model: nn.Module) -> Preprocessing:
    """The registry's preprocessing (``alignbench_info``), else timm's data config of the model."""
    info = getattr(model, "alignbench_info", None)
    if getattr(info, "preprocessing", None) is not None:
        return info.preprocessing
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return Preprocessing(
        input_size=tuple(cfg["input_size"][-2:]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )


def overlay(picture: Image.Image, heatmap: np.ndarray, caption: str) -> Image.Image:
    """The picture with the jet-coloured map blended in, and a caption strip naming the class."""
    from matplotlib import colormaps

    finite = np.nan_to_num(heatmap.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    scaled = (finite - low) / (high - low) if high > low else np.zeros_like(finite)
    colour = colormaps["jet"](scaled)[..., :3] * 255.0
    blended = (1 - OVERLAY_ALPHA) * np.asarray(picture, dtype=np.float64) + OVERLAY_ALPHA * colour
    image = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    canvas = Image.new("RGB", (image.width, image.height + CAPTION_HEIGHT), "black")
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text((3, image.height + 2), caption, fill="white", font=ImageFont.load_default(size=12))
    return canvas


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:  # a/cat.jpg and b/cat.png must not overwrite each other
        stem, n = f"{path.stem}-{n}", n + 1
    used.add(stem)
    return stem


def _load(model: str | ModelRequest | nn.Module, device: str) -> tuple[nn.Module, str]:
    if isinstance(model, nn.Module):
        return model, model_name(model)
    loaded = load_model(model, device=resolve_device(device))
    return loaded, model_name(loaded)


def explain_files(
    model: str | ModelRequest | nn.Module,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = DEFAULT_METHOD,
    params: dict[str, Any] | None = None,
    target: int | None = None,
    device: str = "auto",
    batch_size: int = 8,
    preprocessing: Preprocessing | None = None,
) -> ExplainedFiles:
    """Explain every readable image in ``paths`` (files, or directories: their image files) and write
    ``out_dir/<stem>.npy`` (float32 map at the model's input size) and ``out_dir/<stem>.png`` (overlay).

    ``model`` is a registry/timm name or a ``ModelRequest`` (loaded with ``alignbench.load_model``) or a
    loaded module.
    Unreadable files (and directories without images) are listed in ``skipped``; if none can be read,
    ExplainerError. ``out_dir`` is checked to be writable before the model is loaded.
    """
    name, full = explainer_setting(method, **(params or {}))
    files, skipped = image_files(paths)
    if not files:
        reasons = "; ".join(f"{p} {why}" for p, why in skipped) or "no image or directory was given"
        raise ExplainerError(f"no image files to explain: {reasons}")
    out = check_output_dir(out_dir, "--out")

    module, label = _load(model, device)
    check_applicable(module, name, **full)
    num_classes = int(getattr(module, "num_classes", 0) or 0)
    if target is not None and num_classes:
        resolve_targets(target, torch.zeros(1, num_classes))  # fail before reading any image
    geometry, to_tensor = eval_transform(preprocessing or model_preprocessing(module))

    pictures: list[tuple[Path, Image.Image]] = []
    for path in files:
        try:
            pictures.append((path, geometry(read_image(path))))
        except UnidentifiedImageError:
            skipped.append((path, "not an image (PIL cannot identify it)"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated, corrupt, too large
            skipped.append((path, f"unreadable image ({exc})"))
    if not pictures:
        raise ExplainerError(
            f"none of the {len(files)} file(s) could be read as an image: " + "; ".join(f"{p} ({why})" for p, why in skipped)
        )

    out.mkdir(parents=True, exist_ok=True)
    result = ExplainedFiles(model=label, method=name, params=full, skipped=skipped)
    names: list[str] | None = None
    used: set[str] = set()
    device_ = model_device(module)
    for start in range(0, len(pictures), max(1, batch_size)):
        chunk = pictures[start : start + batch_size]
        images = torch.stack([to_tensor(picture) for _, picture in chunk]).to(device_)
        explanation = explain_batch(module, images, target, name, **full)
        names = names or class_names(explanation.logits.shape[1])
        maps = explanation.maps.detach().float().cpu().numpy()
        predictions = explanation.predictions.tolist()
        confidences = explanation.confidences.tolist()
        targets = explanation.targets.tolist()
        for (path, picture), heatmap, pred, conf, tgt in zip(chunk, maps, predictions, confidences, targets):
            stem = _unique_stem(path, used)
            npy, png = out / f"{stem}.npy", out / f"{stem}.png"
            np.save(npy, heatmap.astype(np.float32))
            caption = f"{names[pred]} ({conf:.0%})" + ("" if tgt == pred else f"  map: {names[tgt]}")
            overlay(picture, heatmap, caption).save(png)
            result.files.append(ExplainedFile(path, npy, png, pred, names[pred], conf, tgt, names[tgt]))
    return result

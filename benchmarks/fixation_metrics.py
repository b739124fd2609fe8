"""The eight fixation metrics of one image at its own size, against the explanation of that image.

    .venv/bin/python benchmarks/fixation_metrics.py [--images 100] [--repeats 3] [--threads N] [--json]

Real data: the NUS scene set at ``../shared/data/nus-scene-500`` (its ``fixations.csv`` and
``sizes.csv``, read directly), every ``k``-th image so that the sizes (256×256 … 3264×2448) appear
as often as in the set. For each image, in one run:

- explanation: alignbench's ``explain_batch`` of ``efficientnet_lite0`` (real weights) with the default
  explainer (threshold-gradcam), one image at the model's input size — what ``score`` computes;
- metrics: the scorer's adapters (``alignbench.metrics.fixation.METRIC_FUNCTIONS``) of all eight
  metrics on a batch of that one image laid out as the fixation datasets' contract says — the map
  upsampled to the stimulus size (bilinear, counted in the time), the image's fixations, its
  fixation density and a centre bias at the stimulus size, and shuffled AUC's negatives = the
  fixations of all 499 other images rescaled to this image's size (~43,800 points).

The density (Gaussian of 0.03 × the longer side) and the centre bias are made here only to have the
right shape and smoothness (the dataset caches the real ones; their making is not timed). Each side
is timed best of ``--repeats``; the ratio is total metric time / total explanation time over the
images (and per size class). The target of issue 22: ≤ 25%.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

import alignbench
from alignbench.explainers import explain_batch
from alignbench.metrics.fixation import METRIC_FUNCTIONS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nus-scene-500"
METRICS = ("nss", "auc-judd", "auc-borji", "sauc", "cc", "kl", "sim", "ig")


def read_nus(root: Path) -> tuple[dict[str, tuple[int, int]], dict[str, np.ndarray]]:
    """(image → (height, width), image → fixations [N, 2] as (x, y), 0-based)."""
    with open(root / "sizes.csv", newline="") as f:
        sizes = {row["image"]: (int(row["height"]), int(row["width"])) for row in csv.DictReader(f)}
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(root / "fixations.csv", newline="") as f:
        for row in csv.DictReader(f):
            points[row["image"]].append((float(row["x"]), float(row["y"])))
    return sizes, {name: np.asarray(points.get(name, []), dtype=np.float64).reshape(-1, 2) for name in sizes}


def density_of(fixations: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    counts = np.zeros(size, dtype=np.float64)
    np.add.at(counts, (np.clip(fixations[:, 1].astype(int), 0, h - 1), np.clip(fixations[:, 0].astype(int), 0, w - 1)), 1.0)
    blurred = gaussian_filter(counts, 0.03 * max(h, w), mode="constant")
    return (blurred / blurred.sum()).astype(np.float32)


def centre_bias_of(size: tuple[int, int]) -> np.ndarray:
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    g = np.exp(-(((x - w / 2) / (0.3 * w)) ** 2 + ((y - h / 2) / (0.3 * h)) ** 2) / 2) + 1e-6
    return (g / g.sum()).astype(np.float32)


def others_of(name: str, sizes: dict, fixations: dict) -> np.ndarray:
    h, w = sizes[name]
    parts = [f * np.array([w / sizes[o][1], h / sizes[o][0]]) for o, f in fixations.items() if o != name and len(f)]
    return np.concatenate(parts)


def score_all(maps: torch.Tensor, batch: dict) -> None:
    fresh = dict(batch)  # no upsampled map or statistics carried over from the previous repeat
    for metric in METRICS:
        METRIC_FUNCTIONS[metric](maps, fresh)


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sizes, fixations = read_nus(DATA)
    names = sorted(sizes)
    names = names[:: max(1, len(names) // args.images)][: args.images]
    model = alignbench.load_model("efficientnet_lite0").eval().requires_grad_(False)
    prep = model.alignbench_info.preprocessing
    mean, std = torch.tensor(prep.mean)[:, None, None], torch.tensor(prep.std)[:, None, None]

    per_class: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    total_metrics = total_explain = 0.0
    for name in names:
        picture = Image.open(DATA / "stimuli" / name).convert("RGB").resize(prep.input_size[::-1], Image.BILINEAR)
        image = ((torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255 - mean) / std)[None]
        maps = explain_batch(model, image).maps
        explain_s = best_of(args.repeats, lambda image=image: explain_batch(model, image))
        size = sizes[name]
        batch = {
            "stimulus_size": [size],
            "fixations": [fixations[name]],
            "density": [density_of(fixations[name], size)],
            "baseline": [centre_bias_of(size)],
            "other_fixations": [others_of(name, sizes, fixations)],
        }

        metrics_s = best_of(args.repeats, lambda maps=maps, batch=batch: score_all(maps, batch))
        total_metrics += metrics_s
        total_explain += explain_s
        label = "256x256" if size == (256, 256) else ("≤1 Mpx" if size[0] * size[1] <= 1_000_000 else ">1 Mpx")
        row = per_class[label]
        row[0] += metrics_s
        row[1] += explain_s
        row[2] += 1

    result = {
        "images": len(names),
        "threads": torch.get_num_threads(),
        "ratio": total_metrics / total_explain,
        "metrics_ms_per_image": 1000 * total_metrics / len(names),
        "explain_ms_per_image": 1000 * total_explain / len(names),
        "by_size": {k: {"images": v[2], "ratio": v[0] / v[1], "metrics_ms": 1000 * v[0] / v[2]} for k, v in per_class.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"NUS scene images: {len(names)}, efficientnet_lite0 threshold-gradcam, CPU, {result['threads']} threads, best of {args.repeats}")
    print(f"explanation  {result['explain_ms_per_image']:8.1f} ms/image")
    print(f"8 metrics    {result['metrics_ms_per_image']:8.1f} ms/image   ratio {result['ratio']:.1%} (target ≤ 25%)")
    for label, v in sorted(result["by_size"].items()):
        print(f"  {label:<8} {v['images']:4d} images  metrics {v['metrics_ms']:8.1f} ms/image  ratio {v['ratio']:.1%}")


if __name__ == "__main__":
    main()

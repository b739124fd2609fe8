"""Throughput of every localisation and faithfulness metric: images/s on efficientnet_lite0, CPU, 224 x 224.

    .venv/bin/python benchmarks/metrics.py [--images 4] [--steps 224] [--batch-sizes 1,16]
                                           [--naive-images 1] [--threads N] [--json]

Maps are random but smooth (7 x 7 noise upsampled, like a CAM), boxes random (1-3 per image), images
random: only the time is measured, so the values themselves mean nothing. The model is alignbench's
``efficientnet_lite0`` (real weights) when it loads, else timm's ``tf_efficientnet_lite0`` with random
weights — the same network, the same cost. Deletion and insertion run at the library's default
forward batch (8 on a CPU); deletion is also timed at each of ``--batch-sizes`` and against RISE's
loop (``evaluation.py`` ``single_run``: the image changed in place, one forward pass per step), after
checking that both give the same AUC. Cheap metrics are timed best-of-3 (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from alignbench.metrics import faithfulness as F
from alignbench.metrics import localisation as L

SIZE = 224


def load_model() -> tuple[nn.Module, str]:
    try:
        import alignbench

        return alignbench.load_model("efficientnet_lite0").eval(), "efficientnet_lite0 (real weights)"
    except Exception as error:  # noqa: BLE001 - any failure: fall back to the same network, random weights
        import timm

        note = f"tf_efficientnet_lite0, random weights ({type(error).__name__})"
        return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval(), note


def inputs(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, SIZE, SIZE, generator=g)
    coarse = torch.rand(n, 1, 7, 7, generator=g)
    maps = nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    corners = torch.rand(n, 3, 2, generator=g) * SIZE * 0.6
    sizes = torch.rand(n, 3, 2, generator=g) * SIZE * 0.4 + 16
    boxes = torch.cat([corners, corners + sizes], dim=2)
    counts = torch.randint(1, 4, (n,), generator=g)
    return {"images": images, "maps": maps, "boxes": boxes, "counts": counts}


def timed(fn: Callable[[], torch.Tensor], n_images: int) -> tuple[float, float]:
    """(images/s, mean value): best of 3 runs for metrics that take under a second, else one run."""
    best, values = float("inf"), None
    for _ in range(3):
        start = time.perf_counter()
        values = fn()
        best = min(best, time.perf_counter() - start)
        if best > 1.0:
            break
    return n_images / best, float(values.float().nanmean())


def naive_deletion(model: nn.Module, image: torch.Tensor, saliency: torch.Tensor, target: int, steps: int) -> float:
    """RISE's single_run: the image changed in place, one forward pass per step."""
    x = image[None].clone()
    pixels = SIZE * SIZE
    order = saliency.flatten().argsort(descending=True, stable=True)
    scores = []
    with torch.inference_mode():
        for i in range(steps + 1):
            scores.append(float(model(x).double().softmax(1)[0, target]))
            x.view(1, 3, pixels)[:, :, order[i * pixels // steps : (i + 1) * pixels // steps]] = 0.0
    return float(torch.trapezoid(torch.tensor(scores, dtype=torch.float64), dx=1.0 / steps))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=F.DEFAULT_STEPS)
    parser.add_argument("--batch-sizes", default="1,16", help="extra forward batch sizes to time deletion at")
    parser.add_argument("--naive-images", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, model_note = load_model()
    data = inputs(args.images)
    images, maps, boxes, counts = data["images"], data["maps"], data["boxes"], data["counts"]
    n = args.images
    with torch.inference_mode():
        logits = model(images)
    targets = logits.argmax(dim=1)
    seeds = list(range(n))
    faith = dict(steps=args.steps)
    runs: dict[str, Callable[[], torch.Tensor]] = {
        "pointing-game": lambda: L.pointing_game(maps, boxes, counts),
        "stochastic-pointing-game": lambda: L.stochastic_pointing_game(maps, boxes, counts, seeds=seeds),
        "energy-in-box": lambda: L.energy_in_box(maps, boxes, counts),
        "deletion": lambda: F.deletion_auc(model, images, maps, targets, **faith),
        "insertion": lambda: F.insertion_auc(model, images, maps, targets, **faith),
        # each on its own (the scorer's adapters share one masked pass between the three)
        "average-drop": lambda: F.average_drop(model, images, maps, targets, logits=logits),
        "average-increase": lambda: F.average_increase(model, images, maps, targets, logits=logits),
        "average-gain": lambda: F.average_gain(model, images, maps, targets, logits=logits),
    }
    results = {}
    for name, run in runs.items():
        rate, mean = timed(run, n)
        results[name] = {"images_per_s": rate, "mean": mean}
        if not args.json:
            print(f"{name:26s} {rate:12.2f} images/s", file=sys.stderr)

    sweep = {}
    for size in [int(x) for x in args.batch_sizes.split(",") if x.strip()]:
        rate, _ = timed(lambda: F.deletion_auc(model, images, maps, targets, steps=args.steps, batch_size=size), n)  # noqa: B023 (called here)
        sweep[size] = rate
        if not args.json:
            print(f"{f'deletion, batch {size}':26s} {rate:12.2f} images/s", file=sys.stderr)

    k = min(args.naive_images, n)
    start = time.perf_counter()
    naive = [naive_deletion(model, images[i], maps[i], int(targets[i]), args.steps) for i in range(k)]
    naive_rate = k / (time.perf_counter() - start)
    batched = F.deletion_auc(model, images[:k], maps[:k], targets[:k], **faith)
    max_diff = max(abs(a - float(b)) for a, b in zip(naive, batched))
    report = {
        "model": model_note,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "images": n,
        "size": SIZE,
        "steps": args.steps,
        "batch_size": F.DEFAULT_BATCH_SIZE["cpu"],
        "metrics": results,
        "deletion_images_per_s_by_batch_size": sweep,
        "deletion_naive_images_per_s": naive_rate,
        "deletion_batched_over_naive": results["deletion"]["images_per_s"] / naive_rate,
        "deletion_naive_vs_batched_max_abs_diff": max_diff,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{'deletion, RISE loop':26s} {naive_rate:12.2f} images/s  (batched / loop = "
            f"{report['deletion_batched_over_naive']:.2f}x, max |AUC diff| = {max_diff:.1e})",
            file=sys.stderr,
        )
        print(
            f"model: {model_note}; {report['threads']} threads; {n} images of {SIZE}x{SIZE}; "
            f"{args.steps} steps; default forward batch {report['batch_size']}",
            file=sys.stderr,
        )
    return report


if __name__ == "__main__":
    main()

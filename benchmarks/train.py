"""Training-step throughput: dense, DCLS, Grad-CAM consistency and the harmonizer, and 1 vs 2 torchrun processes (CPU).

    python benchmarks/train.py [--models efficientnet_lite0,resnet50] [--batch 8] [--steps 3] [--repeats 2]
                               [--variants dense,dcls,dense+gc,dcls+gc,ca-stream,dense+backward,dense+harmonize]
                               [--threads N] [--torchrun-steps 6]
                               [--skip-steps] [--skip-torchrun]

Part 1 — images/s of one ``alignbench train`` step (TrainingStep forward, backward, AdamW step, DCLS
clamp) on random 224×224 images, per model and variant, and each variant's ratio to the dense step
measured in the same run (interleaved repeats, the median step of each). Variants: ``dense`` (cross-
entropy, every weight), ``dcls`` (the registry recipe, --init from-dense, every weight and the
positions), ``dense+gc`` (λ = 25: the 448×448 composite too, and the second-order backward),
``dcls+gc``, ``ca-stream`` (``--ca-stream``: only the stream trains, the backbone in eval mode and
outside autograd; its ratio to ``dense`` is the CA-Stream step against a full fine-tuning step of the
same model), ``dense+harmonize`` (``--harmonize 1``: cross-entropy with label smoothing, the L2 term and
the pyramid MSE of the input gradient to a human map, so the forward, the backward to the images kept
in the graph, and the backward through both), and ``dense+backward``, its floor: the plain step plus
one extra backward to the images (not kept in the graph). Weights are random (the cost does not
depend on them), so it runs offline.

Part 2 — ``alignbench train efficientnet_lite0`` on a synthetic 224×224 ImageFolder, once as one
process and once under ``torchrun --nproc_per_node 2`` (gloo), same global batch: the step images/s
each reports, their ratio, and the wall time of each command. On this 2-core machine one process
uses both cores through intra-op threads, two processes one core each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("dense", "dcls", "dense+gc", "dcls+gc", "ca-stream", "dense+backward", "dense+harmonize")
GC_LAMBDA = 25.0


def _step_fn(model_name: str, variant: str, batch: int):
    import torch
    from timm.optim import create_optimizer_v2

    from alignbench.models import ModelRequest, clamp_positions, load_model
    from alignbench.training import CrossEntropy, GradCamConsistency, TrainingStep, build_composite, param_groups
    from alignbench.training._harmonizer import LABEL_SMOOTHING, Harmonization, WeightL2

    dcls = variant.startswith("dcls")
    request = ModelRequest(model_name, dcls=dcls, pretrained=False, init="from-dense" if dcls else None, ca_stream=variant == "ca-stream")
    model = load_model(request).train()
    terms = [CrossEntropy()] + ([GradCamConsistency(weight=GC_LAMBDA)] if variant.endswith("+gc") else [])
    if variant == "dense+harmonize":  # harmonizer_terms of --harmonize 1 with labels
        terms = [CrossEntropy(label_smoothing=LABEL_SMOOTHING), WeightL2(), Harmonization(weight=1.0)]
    if variant == "dense+backward":
        terms = [CrossEntropy(), _ExtraBackward()]
    step_module = TrainingStep(model, terms)
    optimizer = create_optimizer_v2(param_groups(model, weight_decay=0.05, positions_lr=5e-4), opt="adamw", lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=generator)
    labels = torch.randint(0, 1000, (batch,), generator=generator)
    data = {"image": images, "label": labels}
    if variant == "dense+harmonize":
        rows, cols = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
        centres = torch.randint(40, 184, (batch, 2), generator=generator).float()
        data["reference"] = torch.exp(-((rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2) / (2 * 30.0**2))
        data["has_map"] = torch.ones(batch)
    if variant.endswith("+gc"):
        quadrants = torch.randint(0, 4, (batch,), generator=generator)
        others = torch.randn(batch, 3, 3, 224, 224, generator=generator)
        data["composite"] = torch.stack([build_composite(i, list(o), int(q)) for i, o, q in zip(images, others, quadrants)])
        data["quadrant"] = quadrants

    def step() -> float:
        start = time.perf_counter()
        output = step_module(data)
        optimizer.zero_grad(set_to_none=True)
        output["loss"].backward()
        optimizer.step()
        clamp_positions(model)
        return time.perf_counter() - start

    return step


class _ExtraBackward:
    """The harmonizer's floor: ∂logit/∂image taken once more (a second backward), not kept in the graph; adds 0."""

    name, weight, needs_features, needs_input_grad = "backward", 0.0, False, True

    def __call__(self, forward):
        import torch

        score = forward.logits.gather(1, forward.labels.view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(score, forward.images, retain_graph=True)
        return gradient.mean() * 0


def steps_per_variant(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"== one training step, batch {args.batch} at 224×224, CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), "
        f"median of {args.steps} steps × {args.repeats} interleaved repeats"
    )
    variants = ("dense", *(v for v in args.variants.split(",") if v != "dense"))
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    for model_name in args.models.split(","):
        steps = {variant: _step_fn(model_name, variant, args.batch) for variant in variants}
        for variant, fn in steps.items():
            print(f"  {model_name} {variant}: warm-up step {fn():.1f} s", file=sys.stderr, flush=True)  # allocator, DCLS buffers
        times: dict[str, list[float]] = {variant: [] for variant in variants}
        for _ in range(args.repeats):
            for variant, fn in steps.items():
                times[variant] += [fn() for _ in range(args.steps)]
        dense = statistics.median(times["dense"])
        for variant in variants:
            median = statistics.median(times[variant])
            spread = f"{min(times[variant]):.2f}–{max(times[variant]):.2f} s"
            print(
                f"{model_name:20s} {variant:15s} {args.batch / median:7.2f} img/s  step {median:6.2f} s ({spread})  "
                f"{median / dense:5.2f}× the dense step"
            )
        if "dense+harmonize" in times and "dense+backward" in times:
            harmonize, floor = statistics.median(times["dense+harmonize"]), statistics.median(times["dense+backward"])
            print(f"{model_name:20s} harmonizer step / (plain step + one extra backward): {harmonize / floor:.2f}×")
        del steps


def _synthetic_image_folder(root: Path, classes: int = 8, per_class: int = 4) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)


def processes(args: argparse.Namespace) -> None:
    print(
        f"\n== alignbench train efficientnet_lite0, {args.torchrun_steps} steps, global batch {args.torchrun_batch}, "
        "1 process vs torchrun --nproc_per_node 2 (gloo)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _synthetic_image_folder(root / "data")
        common = [
            "train",
            "efficientnet_lite0",
            "--data",
            str(root / "data"),
            "--steps",
            str(args.torchrun_steps),
            "--batch-size",
            str(args.torchrun_batch),
            "--workers",
            "0",
            "--json",
            "--db",
            f"sqlite:///{root / 's.db'}",
        ]
        runs = {
            "1 process": [sys.executable, "-m", "alignbench", *common, "--out", str(root / "one")],
            "2 processes": [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "alignbench",
                *common,
                "--out",
                str(root / "two"),
            ],
        }
        results = {}
        for label, command in runs.items():
            env = dict(os.environ)
            if label == "2 processes":
                env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // 2))
            start = time.perf_counter()
            finished = subprocess.run(command, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            if finished.returncode != 0:
                raise SystemExit(f"{label} failed:\n{finished.stderr[-2000:]}")
            summary = json.loads(finished.stdout.strip().splitlines()[-1])
            results[label] = summary["images_per_s"]
            print(
                f"{label:12s} {summary['images_per_s']:7.2f} img/s over the steps, final loss {summary['final_loss']:.4f}, "
                f"{wall:6.1f} s wall (start-up, model load and data included)"
            )
        print(f"2 processes / 1 process: {results['2 processes'] / results['1 process']:.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_lite0,resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of part 1 (default: torch's; 1 is steadier on a busy machine)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="which steps to time (dense, the reference, always)")
    parser.add_argument("--torchrun-steps", type=int, default=6)
    parser.add_argument("--torchrun-batch", type=int, default=16)
    parser.add_argument("--skip-steps", action="store_true", help="only part 2")
    parser.add_argument("--skip-torchrun", action="store_true", help="only part 1")
    args = parser.parse_args()
    if not args.skip_steps:
        steps_per_variant(args)
    if not args.skip_torchrun:
        processes(args)


if __name__ == "__main__":
    main()

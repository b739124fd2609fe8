"""Explainer throughput, two parts.

``threshold``: Threshold-Grad-CAM, alignbench's split core against the paper's way, same maps. The
paper's way (threshold_GradCAM.py, and pytorch-grad-cam's BaseCAM) runs the whole model under
autograd with every weight requiring grad and back-propagates the target logit through all of them
to read dy/dA from a hook. alignbench runs ``forward_features`` without autograd and back-propagates
through the head only. Both produce the same maps; this prints images/s of each and their ratio.

``explainers``: ms per image of every CAM and captum attribution on a CNN and a ViT (Grad-CAM on a
ViT is taken at the last block's norm1), each as a ratio to Grad-CAM on the same model in the same
run; and the batching of integrated gradients and smoothgrad: their time against ``steps``
(``samples``) plain input gradients of the same batch (one forward + backward to the input,
parameters frozen) run back to back, which the issue bounds at 1.3x.

    .venv/bin/python benchmarks/explain.py                      # both parts, CPU
    .venv/bin/python benchmarks/explain.py --part threshold --models resnet50 --repeats 10 --device cuda
    .venv/bin/python benchmarks/explain.py --part explainers --batch-size 2 --repeats 2 --ig-steps 16 --samples 16

Weights are random (``pretrained=False``, no network): the cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

from alignbench.explainers import explain, explain_batch


def paper_threshold_gradcam(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Threshold-Grad-CAM computed as the paper's code does: full graph, backward through all weights."""
    a = model.forward_features(images)
    a.retain_grad()  # the paper registers a tensor hook on A; same gradient
    logits = model.forward_head(a)
    (logits * F.one_hot(targets, logits.shape[1])).sum().backward()
    cam = torch.relu(a.grad.mean((2, 3), keepdim=True) * a.detach()).mean(1)
    flat = cam.flatten(1)
    low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    cam = ((cam - low) / (high - low)).clamp_min(threshold)
    model.zero_grad(set_to_none=True)
    return F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def _timed(fn, sync) -> tuple[float, torch.Tensor]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def bench(name: str, batch_size: int, repeats: int, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval().to(device)
    images = torch.randn(batch_size, 3, 224, 224, device=device)
    targets = torch.randint(0, model.num_classes, (batch_size,), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    ours_fn = lambda: explain(model, images, targets, "threshold-gradcam")  # noqa: E731
    paper_fn = lambda: paper_threshold_gradcam(model, images, targets)  # noqa: E731
    ours_fn(), paper_fn()  # warm-up (allocator, kernels)
    ours_t, paper_t, diff = [], [], 0.0
    for _ in range(repeats):  # interleaved, so load from other processes hits both alike
        t, ours = _timed(ours_fn, sync)
        ours_t.append(t)
        t, theirs = _timed(paper_fn, sync)
        paper_t.append(t)
        diff = max(diff, float((ours - theirs).abs().max()))
    ours_s, paper_s = statistics.median(ours_t), statistics.median(paper_t)
    return {
        "ours": batch_size / ours_s,
        "paper": batch_size / paper_s,
        "ratio": paper_s / ours_s,
        "max_abs_diff": diff,
    }


# what the explainers part runs on each model: (method, parameters from the command line)
CAMS = ("gradcam", "threshold-gradcam", "gradcam++", "layercam")
ATTRIBUTIONS = ("saliency", "input-x-gradient", "integrated-gradients", "smoothgrad", "guided-backprop", "occlusion")


def plain_gradient(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One forward and one backward to the input, parameters frozen: the unit IG and SmoothGrad pay per step."""
    x = images.detach().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
    return grad


def bench_explainers(name: str, args: argparse.Namespace) -> list[tuple[str, str, float]]:
    """(method, parameters, median seconds per call) on one model, calls interleaved across methods."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval().to(args.device)
    size = model.pretrained_cfg["input_size"][-2:]
    images = torch.randn(args.batch_size, 3, *size, device=args.device)
    targets = torch.randint(0, model.num_classes, (args.batch_size,), device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    params = {
        "integrated-gradients": {"ig_steps": args.ig_steps},
        "smoothgrad": {"samples": args.samples},
        "occlusion": {"window": args.window, "stride": args.stride},
    }
    wanted = args.methods or (*CAMS, *ATTRIBUTIONS)
    methods = [m for m in wanted if not (m == "guided-backprop" and "vit" in name)]  # no nn.ReLU in a ViT
    methods = ["gradcam", *(m for m in methods if m != "gradcam")]  # the reference of every ratio
    calls = {m: (lambda m=m: explain_batch(model, images, targets, m, **params.get(m, {}))) for m in methods}

    def frozen_gradient():
        model.requires_grad_(False)
        try:
            return plain_gradient(model, images, targets)
        finally:
            model.requires_grad_(True)

    calls["plain gradient"] = frozen_gradient
    # the reference of the batching bound, literally: n plain gradients of the batch, back to back
    for n in sorted({args.ig_steps, args.samples}):
        calls[f"{n} plain gradients"] = lambda n=n: [frozen_gradient() for _ in range(n)]
    for fn in calls.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {m: [] for m in calls}
    for _ in range(args.repeats):
        for m, fn in calls.items():
            times[m].append(_timed(fn, sync)[0])
    return [(m, ", ".join(f"{k}={v}" for k, v in params.get(m, {}).items()), statistics.median(t)) for m, t in times.items()]


def print_explainers(args: argparse.Namespace) -> None:
    print(
        f"\nExplainers, batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads, median of {args.repeats}; "
        "random weights; ratio: to Grad-CAM on the same model in this run"
    )
    print(f"{'model':<24}{'explainer':<22}{'parameters':<22}{'ms/img':>10}{'x gradcam':>11}")
    for name in args.explainer_models:
        rows = bench_explainers(name, args)
        seconds = dict((m, t) for m, _, t in rows)
        for m, p, t in rows:
            if "plain gradient" in m:
                continue
            print(f"{name:<24}{m:<22}{p:<22}{1000 * t / args.batch_size:>10.1f}{t / seconds['gradcam']:>10.2f}x")
        unit = seconds["plain gradient"]
        print(f"{name:<24}{'plain gradient':<22}{'':<22}{1000 * unit / args.batch_size:>10.1f}{unit / seconds['gradcam']:>10.2f}x")
        for m, n in (("integrated-gradients", args.ig_steps), ("smoothgrad", args.samples)):
            if m not in seconds:
                continue
            loop = seconds[f"{n} plain gradients"]
            print(
                f"{name:<24}{m} / {n} plain gradients run back to back = {seconds[m] / loop:.2f} (bound 1.30; / {n} x one timed alone: {seconds[m] / (n * unit):.2f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("threshold", "explainers", "all"), default="all")
    parser.add_argument("--models", nargs="+", default=["resnet50", "convnext_tiny"], help="threshold part")
    parser.add_argument("--explainer-models", nargs="+", default=["resnet50", "vit_small_patch16_224"], help="explainers part")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", help="explainers part: these explainers only (Grad-CAM, the reference, always)")
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    args = parser.parse_args()
    if args.part in ("threshold", "all"):
        print(
            f"Threshold-Grad-CAM, batch {args.batch_size}, 224x224, {args.device}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, median of {args.repeats}"
        )
        print(f"{'model':<16}{'alignbench img/s':>18}{'paper img/s':>14}{'ratio':>8}{'max |diff|':>12}")
        for name in args.models:
            r = bench(name, args.batch_size, args.repeats, args.device)
            print(f"{name:<16}{r['ours']:>18.2f}{r['paper']:>14.2f}{r['ratio']:>7.2f}x{r['max_abs_diff']:>12.2e}")
    if args.part in ("explainers", "all"):
        print_explainers(args)


if __name__ == "__main__":
    main()

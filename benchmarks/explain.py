"""Threshold-Grad-CAM throughput: alignbench's split core against the paper's way, same maps.

The paper's way (threshold_GradCAM.py, and pytorch-grad-cam's BaseCAM) runs the whole model under
autograd with every weight requiring grad and back-propagates the target logit through all of them
to read dy/dA from a hook. alignbench runs ``forward_features`` without autograd and back-propagates
through the head only. Both produce the same maps; this prints images/s of each and their ratio.

    .venv/bin/python benchmarks/explain.py                      # resnet50 and convnext_tiny, CPU, batch 8
    .venv/bin/python benchmarks/explain.py --models resnet50 --repeats 10 --device cuda

Weights are random (``pretrained=False``, no network): the cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

from alignbench.explainers import explain


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "convnext_tiny"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(
        f"Threshold-Grad-CAM, batch {args.batch_size}, 224x224, {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"{'model':<16}{'alignbench img/s':>18}{'paper img/s':>14}{'ratio':>8}{'max |diff|':>12}")
    for name in args.models:
        r = bench(name, args.batch_size, args.repeats, args.device)
        print(f"{name:<16}{r['ours']:>18.2f}{r['paper']:>14.2f}{r['ratio']:>7.2f}x{r['max_abs_diff']:>12.2e}")


if __name__ == "__main__":
    main()

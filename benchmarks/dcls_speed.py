"""Forward+backward cost of a model with and without DCLS (default: convnext_tiny on CPU).

    python benchmarks/dcls_speed.py [--model convnext_tiny] [--batch 8] [--iters 3] [--device cpu]

Prints, per variant (dense, DCLS v0, v1, gauss with the registry recipe), the time per image of one
training step (forward, backward), its ratio to dense, and the peak memory of that step. Each variant
runs in its own process so that peaks do not mix. Weights are random (pretrained=False): the cost
does not depend on their values, and the benchmark runs offline.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:  # Linux: writing 5 resets VmHWM, the peak resident set size
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _measure(variant: str, args: argparse.Namespace, results) -> None:
    import torch

    from alignbench.models import load_model

    torch.set_num_threads(args.threads or torch.get_num_threads())
    dcls = variant != "dense"
    model = load_model(args.model, dcls=dcls, pretrained=False, version=variant if dcls else None,
                       init="random" if dcls else None, device=args.device)
    model.train()
    size = model.alignbench_info.preprocessing.input_size if args.size is None else (args.size, args.size)
    x = torch.randn(args.batch, 3, *size, device=args.device)
    target = torch.randint(0, model.alignbench_info.num_classes, (args.batch,), device=args.device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    # Peak of a training step over the model and input already in memory (the warm-up step counts:
    # DCLS builds its index grids there).
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _rss_kib("VmRSS") * 1024
        _reset_peak_rss()
    step()  # warm-up
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024
    report = model.alignbench_info.conversion
    results.put({
        "variant": variant,
        "ms_per_image": 1000 * statistics.median(times) / args.batch,
        "peak_mib": (peak - baseline) / 2**20,
        "params": model.alignbench_info.param_count,
        "layers": len(report.layers) if report else 0,
        "input": f"{args.batch}×3×{size[0]}×{size[1]}",
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnext_tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="input side (default: the model's)")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default="dense,v0,v1,gauss")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    rows = []
    for variant in args.variants.split(","):
        results = context.Queue()
        process = context.Process(target=_measure, args=(variant, args, results))
        process.start()
        rows.append(results.get())
        process.join()
    dense = next((row for row in rows if row["variant"] == "dense"), rows[0])
    print(f"{args.model}, forward+backward, {rows[0]['input']} on {args.device} "
          f"({args.threads or os.cpu_count()} threads), median of {args.iters}")
    print(f"{'variant':<8} {'ms/image':>10} {'× dense':>8} {'peak MiB':>10} {'params':>12} {'DCLS layers':>12}")
    for row in rows:
        print(f"{row['variant']:<8} {row['ms_per_image']:>10.1f} {row['ms_per_image'] / dense['ms_per_image']:>8.2f} "
              f"{row['peak_mib']:>10.0f} {row['params']:>12,} {row['layers']:>12}")


if __name__ == "__main__":
    main()

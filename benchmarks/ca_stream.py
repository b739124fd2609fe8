"""Cost of a CA-Stream training step (backbone frozen: its features computed without autograd) as a
ratio to a full fine-tuning step of the same model, measured in the same run.

    python benchmarks/ca_stream.py [--models efficientnet_lite0,resnet50] [--batch 16] [--repeats 3] [--iters 2]

Per model: the time per image of one optimiser step (forward, cross-entropy, backward, SGD with
momentum) for (a) every parameter training, the model in train mode, and (b) ``--ca-stream``: only the
stream trains, the backbone in eval mode and outside autograd. The two are interleaved repeat by
repeat (A, B, A, B, ...) so that a machine shared with other work slows both alike; each repeat's
ratio is printed, then the median. Weights are random (pretrained=False): the cost does not depend on
them, and the benchmark runs offline.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _step_timer(model, trainable, images, labels):
    import torch

    optimizer = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> float:
        start = time.perf_counter()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()
        return time.perf_counter() - start

    step()  # warm-up (allocator, kernels)
    return step


def measure(name: str, batch: int, repeats: int, iters: int) -> dict:
    import torch

    from alignbench.models import load_model

    full = load_model(name, pretrained=False).requires_grad_(True)
    stream = load_model(name, pretrained=False, ca_stream=True)
    size = full.alignbench_info.preprocessing.input_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=generator)
    labels = torch.randint(0, full.alignbench_info.num_classes, (batch,), generator=generator)
    steps = {
        "full": _step_timer(full, list(full.parameters()), images, labels),
        "ca-stream": _step_timer(stream, list(stream.ca_stream.parameters()), images, labels),
    }
    per_image: dict[str, list[float]] = {key: [] for key in steps}
    ratios = []
    for repeat in range(repeats):
        for key, step in steps.items():
            per_image[key].append(1000 * statistics.median(step() for _ in range(iters)) / batch)
        ratios.append(per_image["ca-stream"][-1] / per_image["full"][-1])
        print(f"  {name} repeat {repeat + 1}: full {per_image['full'][-1]:.1f} ms/img, "
              f"ca-stream {per_image['ca-stream'][-1]:.1f} ms/img, ratio {ratios[-1]:.3f}", flush=True)
    return {
        "model": name,
        "full_ms_per_image": statistics.median(per_image["full"]),
        "stream_ms_per_image": statistics.median(per_image["ca-stream"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "trainable_full": sum(p.numel() for p in full.parameters()),
        "trainable_stream": stream.ca_stream.parameter_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=2, help="steps per repeat (their median counts)")
    args = parser.parse_args()
    import torch

    print(f"CA-Stream training step vs full fine-tuning (CPU, {torch.get_num_threads()} threads, batch {args.batch})")
    rows = [measure(name, args.batch, args.repeats, args.iters) for name in args.models.split(",")]
    print(f"{'model':<20}{'full ms/img':>13}{'stream ms/img':>15}{'ratio':>8}  (median of repeats; trainable parameters)")
    for row in rows:
        print(f"{row['model']:<20}{row['full_ms_per_image']:>13.1f}{row['stream_ms_per_image']:>15.1f}{row['ratio']:>8.3f}"
              f"  ({row['trainable_stream']:,} of {row['trainable_full'] + row['trainable_stream']:,} vs {row['trainable_full']:,})")


if __name__ == "__main__":
    main()

"""What DCLS costs against the dense model: Grad-CAM explanations and training steps, fast and reference.

    python benchmarks/dcls_speed.py [--models resnet50,efficientnet_lite0,efficientnet_lite0:spread,convnext_tiny]
                                    [--variants dense,fast,reference] [--repeats 3] [--batch 8] [--threads 2] [--no-memory]

For each model and variant (dense; DCLS "fast" = alignbench's cached/lean kernels, the default;
DCLS "reference" = the dcls package's own Dcls2d forward) it prints, per image of a batch of
``--batch`` 224² images:

- explain: ``alignbench.explain(model, x, method="threshold-gradcam")`` with every parameter frozen,
  median of ``--repeats`` calls after one warm-up call (the warm-up builds the fast path's kernels;
  its time is printed as "1st");
- train: one SGD step (zero_grad, forward, cross-entropy, backward, step, and for DCLS
  ``clamp_positions``) in train mode, median of ``--repeats`` after one warm-up step;
- peak: memory of one training step — the growth of the peak resident set (Linux VmHWM, reset just
  before the step) over the resident set before it, in a separate process whose glibc returns every
  block above 64 KiB to the system on free (MALLOC_MMAP_THRESHOLD_=65536), so that the resident set
  follows the live tensors instead of malloc's cache. (Timings run without that setting.)
- GFLOP/img: multiply-adds ×2 of one eval forward (torch.utils.flop_counter), i.e. the arithmetic.
  For "reference" that is the full D×D kernel: the floor any implementation convolving with it
  has; "fast" counts the trimmed kernels it actually runs.

Weights are random (pretrained=False; timing does not depend on their values, and the benchmark runs
offline). DCLS positions: "init" are Dcls2d's own initial ones, N(0, 0.5) pixels from the centre
(``--init random``, where DCLS training starts); "spread" draws them uniformly over the whole dilated
kernel, as trained checkpoints have them; "from-dense" keeps them on the dense grid. Every
(model, variant) runs in its own process, one after another; ratios are to dense in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

# model key -> (registry model, positions)
MODELS = {
    "resnet50": ("resnet50", "init"),
    "efficientnet_lite0": ("efficientnet_lite0", "from-dense"),
    "efficientnet_lite0:spread": ("efficientnet_lite0", "spread"),
    "convnext_tiny": ("convnext_tiny", "init"),
    "convnext_tiny:spread": ("convnext_tiny", "spread"),
}
# issue 12's targets, DCLS fast / dense: (explain, training step); peak memory of a step ≤ 2×
TARGETS = {
    "resnet50": (3.0, 4.0),
    "efficientnet_lite0": (1.5, 6.0),
    "efficientnet_lite0:spread": (4.0, 6.0),
    "convnext_tiny": (1.1, 2.0),
}
MEMORY_TARGET = 2.0
VARIANTS = ("dense", "fast", "reference")


def _model(key: str, variant: str):
    import torch

    from alignbench.models import load_model

    name, positions = MODELS[key]
    if variant == "dense":
        return load_model(name, pretrained=False)
    init = "from-dense" if positions == "from-dense" else "random"  # random: Dcls2d's N(0, 0.5) positions
    model = load_model(name, dcls=True, pretrained=False, init=init)
    if positions == "spread":
        from alignbench.models._dcls import dcls_layers, position_limit

        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _, conv in dcls_layers(model):
                limit = position_limit(conv)
                conv.P.copy_((torch.rand(conv.P.shape, generator=generator) * 2 - 1) * limit)
    return model


def _timings(key: str, variant: str, args: argparse.Namespace, results) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import alignbench
    from alignbench.models import clamp_positions, dcls_implementation

    torch.set_num_threads(args.threads)
    model = _model(key, variant)
    size = model.alignbench_info.preprocessing.input_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, *size, generator=generator)
    y = torch.randint(0, 1000, (args.batch,), generator=generator)
    with dcls_implementation("reference" if variant == "reference" else "fast"):
        model.eval().requires_grad_(False)
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            model(x[:1])
        start = time.perf_counter()
        alignbench.explain(model, x, method="threshold-gradcam")
        first = time.perf_counter() - start
        explain = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            alignbench.explain(model, x, method="threshold-gradcam")
            explain.append(time.perf_counter() - start)

        model.train().requires_grad_(True)
        step = _training_step(model, x, y, dcls=variant != "dense", clamp=clamp_positions)
        step()
        train = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            train.append(time.perf_counter() - start)
    results.put(
        {
            "explain_first": 1000 * first / args.batch,
            "explain": 1000 * statistics.median(explain) / args.batch,
            "train": 1000 * statistics.median(train) / args.batch,
            "gflops": flops.get_total_flops() / 1e9,
        }
    )


def _training_step(model, x, y, *, dcls: bool, clamp):
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        if dcls:
            clamp(model)

    return step


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_memory(key: str, variant: str, args: argparse.Namespace, results) -> None:
    import torch

    from alignbench.models import clamp_positions, dcls_implementation

    torch.set_num_threads(args.threads)
    model = _model(key, variant).train()
    size = model.alignbench_info.preprocessing.input_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, *size, generator=generator)
    y = torch.randint(0, 1000, (args.batch,), generator=generator)
    with dcls_implementation("reference" if variant == "reference" else "fast"):
        step = _training_step(model, x, y, dcls=variant != "dense", clamp=clamp_positions)
        step()  # momentum buffers, oneDNN primitives: what every later step finds in place
        before = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current resident set
        step()
        results.put((_status("VmHWM") - before) / 2**20)


def _run(target, key: str, variant: str, args: argparse.Namespace, env: dict[str, str] | None = None):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    saved = {name: os.environ.get(name) for name in (env or {})}
    os.environ.update(env or {})  # a spawned child reads the environment it starts with
    try:
        process = context.Process(target=target, args=(key, variant, args, results))
        process.start()
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    result = results.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of dense, fast, reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    args = parser.parse_args()
    keys = [key for key in args.models.split(",") if key]
    variants = [variant for variant in args.variants.split(",") if variant]
    unknown = sorted(set(keys) - set(MODELS)) + sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    if "dense" not in variants:
        variants.insert(0, "dense")  # every ratio is to dense measured in the same run

    print(
        f"batch {args.batch}, {args.threads} torch threads, median of {args.repeats} after one warm-up; "
        "ms per image; × = ratio to dense in this run"
    )
    header = (
        f"{'model':<27} {'variant':<9} {'GFLOP/img':>9} {'×':>5} {'explain':>8} {'×':>6} {'(1st)':>7} "
        f"{'train':>8} {'×':>6} {'peak MiB':>9} {'×':>5}"
    )
    print(header)
    summary = []
    for key in keys:
        rows = {}
        for variant in variants:
            row = _run(_timings, key, variant, args)
            row["peak"] = None if args.no_memory else _run(_peak_memory, key, variant, args, {"MALLOC_MMAP_THRESHOLD_": "65536"})
            rows[variant] = row
            dense = rows["dense"]
            ratio = lambda field: row[field] / dense[field]  # noqa: E731, B023 (called in this iteration)
            peak = "" if row["peak"] is None else f"{row['peak']:>9.0f} {row['peak'] / dense['peak']:>5.2f}"
            name = f"{MODELS[key][0]} ({MODELS[key][1]})" if variant == "dense" else ""
            print(
                f"{name:<27} {variant:<9} {row['gflops']:>9.2f} {ratio('gflops'):>5.2f} {row['explain']:>8.1f} "
                f"{ratio('explain'):>6.2f} {row['explain_first']:>7.1f} {row['train']:>8.1f} {ratio('train'):>6.2f} {peak}",
                flush=True,
            )
        if "fast" in rows:
            summary.append((key, rows))
    if summary:
        print("\ntargets (DCLS fast / dense): measured vs target; D×D floor = reference GFLOP / dense GFLOP")
        for key, rows in summary:
            fast, dense = rows["fast"], rows["dense"]
            explain_target, train_target = (f" (≤ {t}×)" for t in TARGETS[key]) if key in TARGETS else ("", "")
            floor = f", D×D floor {rows['reference']['gflops'] / dense['gflops']:.2f}×" if "reference" in rows else ""
            runs = f"fast runs {fast['gflops'] / dense['gflops']:.2f}× the FLOPs{floor}"
            line = (
                f"  {key:<26} explain {fast['explain'] / dense['explain']:.2f}×{explain_target}, "
                f"train {fast['train'] / dense['train']:.2f}×{train_target}"
            )
            if fast["peak"] is not None:
                line += f", peak {fast['peak'] / dense['peak']:.2f}× (≤ {MEMORY_TARGET}×)"
            print(f"{line}; {runs}")


if __name__ == "__main__":
    main()

"""torchrun: 2 CPU processes (gloo, DistributedDataParallel) with half the per-process batch follow the
1-process loss curve — with the second-order Grad-CAM consistency term inside DDP's forward."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alignbench.models import ModelRequest, load_model
from alignbench.testing.tolerance import network_relative
from alignbench.training import TrainRequest, train

STEPS = 4


def _step_log(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["event"] == "step"]


def test_two_processes_follow_the_one_process_loss_curve(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for label in range(4):  # 16 images: global batch 8 = 2 × 4, the same images every step either way
        (data / f"class{label}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (72, 80, 3), dtype=np.uint8)).save(data / f"class{label}" / f"{i}.png")
    db = f"sqlite:///{tmp_path / 's.db'}"
    # GroupNorm, not BatchNorm: batch statistics would differ per process by design (as timm without --sync-bn)
    options = dict(steps=STEPS, batch_size=8, img_size=64, lr=1e-2, workers=0, gc_consistency=1.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train(
            TrainRequest(model=ModelRequest("test_efficientnet_gn", pretrained=False), data=data, out=tmp_path / "one", **options), db=db
        )
    finally:
        torch.set_num_threads(threads)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "alignbench",
        "train",
        "test_efficientnet_gn",
        "--no-pretrained",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "two"),
        "--steps",
        str(STEPS),
        "--batch-size",
        "8",
        "--img-size",
        "64",
        "--lr",
        "0.01",
        "--workers",
        "0",
        "--gc-consistency",
        "1",
        "--db",
        db,
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    two = json.loads(finished.stdout.strip().splitlines()[-1])  # rank 0's summary; the other rank prints nothing
    assert two["processes"] == 2 and two["steps"] == STEPS

    a, b = _step_log(one.out), _step_log(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    # Step 1 evaluates the same weights on batches of 8 and of 2 × 4: the outputs within
    # network_relative (the kernels sum the same products in other orders), and the loss terms are
    # well-conditioned functions of them. Each step's update then carries the rounding of one
    # gradient (forward, backward and the second-order pass of the consistency term: 4 passes) into
    # the weights; AdamW normalises the gradient entry by entry, so each step moves the two runs
    # apart by at most that relative bound again (assuming, as for these 4 steps, the loss is
    # well conditioned in the weights): step k's bound is the first's plus k - 1 gradients'.
    model = load_model(ModelRequest("test_efficientnet_gn", pretrained=False))
    forward, gradient = network_relative(model), network_relative(model, passes=4)
    rtol = np.array([forward + (k - 1) * gradient for k in range(1, STEPS + 1)])
    for name in ("ce", "gc"):
        np.testing.assert_array_less(
            np.abs(np.array([r["terms"][name] for r in b]) - [r["terms"][name] for r in a]), rtol * [r["terms"][name] for r in a]
        )
    np.testing.assert_array_less(np.abs(np.array([r["loss"] for r in b]) - [r["loss"] for r in a]), rtol * [r["loss"] for r in a])
    assert a[-1]["loss"] < a[0]["loss"]
    weights_one = torch.load(one.out / "last.pt", weights_only=True)["model"]
    weights_two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    # AdamW (the recipe) moves an entry by lr_k·m̂/√v̂, and over k steps the bias-corrected averages
    # weigh the k gradients near-uniformly: |m̂| ≤ max|g|, √v̂ ≥ max|g|/√k, so ≤ lr_k·√k. The two runs'
    # normalised steps differ by their gradients' relative rounding, twice (m̂ and √v̂).
    atol = 2 * gradient * sum(r["lr"] * np.sqrt(r["step"]) for r in a)
    for key, value in weights_one.items():
        torch.testing.assert_close(weights_two[key], value, rtol=0, atol=atol)

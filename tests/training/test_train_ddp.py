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

from alignbench.models import ModelRequest
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
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
    np.testing.assert_allclose([r["terms"]["gc"] for r in b], [r["terms"]["gc"] for r in a], rtol=1e-4)
    assert a[-1]["loss"] < a[0]["loss"]
    weights_one = torch.load(one.out / "last.pt", weights_only=True)["model"]
    weights_two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    for key, value in weights_one.items():
        torch.testing.assert_close(weights_two[key], value, rtol=1e-4, atol=1e-5)

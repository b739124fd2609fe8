"""--init from-dense is the dense model: same top-1 on all 1000 images of imagenet-samples-256.

The recipe is the smallest that holds every dense tap of efficientnet_lite0 (5×5 span, 25 ≥ 5² and
3² elements), so the DCLS model costs about what the dense one does; the paper-sized 17×17 recipe is
checked on real images in test_models.py.

Two forward passes over all 1000 images at 224 px take about 45 s on an idle 2-core CPU (the issue
asks for all 1000); ``ALIGNBENCH_QUICK_TESTS=1`` takes every 20th image (50 classes) for quick local runs.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import timm
import torch
from PIL import Image

from alignbench.models import load_model
from alignbench.testing.tolerance import network_relative


def test_efficientnet_lite0_from_dense_keeps_every_top1(shared_data: Path) -> None:
    root = shared_data / "imagenet-samples-256"
    rows = list(csv.DictReader(open(root / "labels.csv")))
    assert len(rows) == 1000
    quick = os.environ.get("ALIGNBENCH_QUICK_TESTS") == "1"
    rows = rows[::20] if quick else rows
    dense = load_model("efficientnet_lite0")
    dcls = load_model("efficientnet_lite0", dcls=True, init="from-dense", dilated_kernel_size=5, kernel_count=25)
    assert dcls.alignbench_info.conversion.kernel_error == 0.0
    pre = dense.alignbench_info.preprocessing
    transform = timm.data.create_transform(
        input_size=(3, *pre.input_size),
        interpolation=pre.interpolation,
        mean=pre.mean,
        std=pre.std,
        crop_pct=pre.crop_pct,
    )
    dense, dcls = (m.to(memory_format=torch.channels_last) for m in (dense, dcls))
    dense_top1, dcls_top1, worst, scale = [], [], 0.0, 0.0
    with torch.inference_mode():
        for start in range(0, len(rows), 25):
            batch = torch.stack(
                [transform(Image.open(root / "images" / row["filename"]).convert("RGB")) for row in rows[start : start + 25]]
            ).to(memory_format=torch.channels_last)
            dense_logits, dcls_logits = dense(batch), dcls(batch)
            worst = max(worst, (dense_logits - dcls_logits).abs().max().item())
            scale = max(scale, dense_logits.abs().max().item())
            dense_top1 += dense_logits.argmax(1).tolist()
            dcls_top1 += dcls_logits.argmax(1).tolist()
    labels = [int(row["class_index"]) for row in rows]
    assert dcls_top1 == dense_top1
    # kernel_error 0: the same function summed in other orders (a 5×5 DCLS kernel for the 3×3 taps), so
    # within network_relative of the largest logit (was 1e-3, tuned)
    assert worst <= network_relative(dense) * scale
    accuracy = sum(p == y for p, y in zip(dense_top1, labels)) / len(labels)
    assert 0.8 <= accuracy <= 0.97  # ~0.89 on all 1000 (data README): the real weights are loaded

"""Check alignbench's ClickMe decoding and preprocessing against TensorFlow itself.

alignbench never imports TensorFlow, so this runs in two steps and two environments:

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu simplejpeg pillow
    /tmp/tfvenv/bin/python scripts/check_clickme_against_tensorflow.py tf /tmp/tf_side.npz
    .venv/bin/python scripts/check_clickme_against_tensorflow.py compare /tmp/tf_side.npz

Step ``tf`` takes 64 real images of ../shared/data/imagenet-samples-256 (squashed to 256×256, as
ClickMe records hold them) and synthetic click-like heatmaps, encodes them as JPEG seven ways (TF's
and PIL's encoders, several qualities and chroma subsamplings, one grayscale), decodes every file
with ``tf.io.decode_jpeg`` (TF's defaults), with simplejpeg as alignbench does and with PIL, and runs
Harmonization's ``parse_clickme_prototype`` steps in TF (bilinear 256→224 image; heatmap bilinear
256→64, the ClickMe blur as ``conv2d(..., "SAME")``, bilinear 64→224). Step ``compare`` feeds TF's
decoded pixels to alignbench's pipeline and prints the largest differences, and how much the
decoder alone moves Spearman's ρ against the same maps.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "data" / "imagenet-samples-256" / "images"
N_IMAGES = 64


def heatmap(rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[0:256, 0:256]
    heat = np.zeros((256, 256))
    for _ in range(3):
        cy, cx = rng.uniform(40, 216, 2)
        sigma = rng.uniform(10, 40)
        heat += np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma * sigma))
    return np.round(255 * heat / heat.max()).astype(np.uint8)


def tf_side(out: Path) -> None:
    import simplejpeg
    import tensorflow as tf
    from PIL import Image

    def pil_jpeg(image: Image.Image, **options) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", **options)
        return buffer.getvalue()

    # the ClickMe blur exactly as SPEC defines it (10×10, sigma 10, x -5…4, y 4…-5, normalised)
    xs, ys = np.arange(-5, 5, dtype=np.float64), np.arange(4, -6, -1, dtype=np.float64)
    kernel = np.exp(-(xs[None, :] ** 2 + ys[:, None] ** 2) / 200.0) / (200.0 * np.pi)
    kernel = tf.constant((kernel / kernel.sum()).astype(np.float32)[:, :, None, None])
    rng = np.random.default_rng(0)
    worst: dict[str, list[int]] = {}
    records = {"tf_heatmap": [], "pil_heatmap": [], "tf_image": [], "tf_image224": [], "tf_heatmap224": []}
    for path in sorted(IMAGES.iterdir())[:N_IMAGES]:
        rgb = Image.open(path).convert("RGB").resize((256, 256), Image.BILINEAR)
        heat = heatmap(rng)
        encodings = {
            "TF rgb q95 4:2:0 (TF's defaults)": tf.io.encode_jpeg(np.asarray(rgb)).numpy(),
            "TF rgb q75": tf.io.encode_jpeg(np.asarray(rgb), quality=75).numpy(),
            "TF rgb q95 4:4:4": tf.io.encode_jpeg(np.asarray(rgb), chroma_downsampling=False).numpy(),
            "PIL rgb q95 4:4:4": pil_jpeg(rgb, quality=95, subsampling=0),
            "PIL rgb q75 4:2:0": pil_jpeg(rgb, quality=75, subsampling=2),
            "PIL rgb q50 4:2:2": pil_jpeg(rgb, quality=50, subsampling=1),
            "TF gray heatmap q95": tf.io.encode_jpeg(heat[:, :, None]).numpy(),
        }
        for name, data in encodings.items():
            reference = tf.io.decode_jpeg(data).numpy()
            gray = reference.shape[-1] == 1
            ours = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB", fastdct=True, fastupsample=False)
            pil = np.asarray(Image.open(io.BytesIO(data)).convert("L" if gray else "RGB")).reshape(reference.shape)
            row = worst.setdefault(name, [0, 0])
            row[0] = max(row[0], int(np.abs(ours.astype(int) - reference.astype(int)).max()))
            row[1] = max(row[1], int(np.abs(pil.astype(int) - reference.astype(int)).max()))
        image_jpeg, heat_jpeg = encodings["TF rgb q95 4:2:0 (TF's defaults)"], encodings["TF gray heatmap q95"]
        # Harmonization's parse_clickme_prototype
        image = tf.cast(tf.reshape(tf.io.decode_jpeg(image_jpeg), (256, 256, 3)), tf.float32)
        heat_map = tf.cast(tf.reshape(tf.io.decode_jpeg(heat_jpeg), (256, 256, 1)), tf.float32)
        blurred = tf.nn.conv2d(tf.image.resize(heat_map, (64, 64), method="bilinear")[None], kernel, [1, 1, 1, 1], "SAME")[0]
        records["tf_image"].append(tf.io.decode_jpeg(image_jpeg).numpy())
        records["tf_heatmap"].append(heat_map.numpy()[:, :, 0].astype(np.uint8))
        records["pil_heatmap"].append(np.asarray(Image.open(io.BytesIO(heat_jpeg)).convert("L")))
        records["tf_image224"].append(tf.image.resize(image, (224, 224), method="bilinear").numpy())
        records["tf_heatmap224"].append(tf.image.resize(blurred, (224, 224), method="bilinear").numpy()[:, :, 0])
    np.savez(out, **{name: np.stack(values) for name, values in records.items()})
    print(f"tensorflow {tf.__version__}, simplejpeg {simplejpeg.__version__}; {N_IMAGES} images; max |decoded − TF|, grey levels:")
    for name, (ours, pil) in worst.items():
        print(f"  {name:34s} simplejpeg fastdct (alignbench) {ours:3d}   PIL {pil:3d}")


def compare(saved: Path) -> None:
    import torch

    from alignbench.datasets._pipeline import clickme_reference, resize_bilinear
    from alignbench.metrics.spearman import spearman

    data = np.load(saved)
    images = torch.from_numpy(data["tf_image"]).permute(0, 3, 1, 2).float()
    ours_image = resize_bilinear(images, (224, 224)).permute(0, 2, 3, 1).numpy()
    refs = torch.stack([clickme_reference(torch.from_numpy(h.astype(np.float32))) for h in data["tf_heatmap"]])
    refs_pil = torch.stack([clickme_reference(torch.from_numpy(h.astype(np.float32))) for h in data["pil_heatmap"]])
    tf_refs = data["tf_heatmap224"]
    print(f"from TF's decoded pixels, alignbench vs TF's parse_clickme_prototype ({len(images)} images):")
    print(f"  image 224×224   max |diff| {np.abs(ours_image - data['tf_image224']).max():.2e} (0..255)")
    print(
        f"  reference map   max |diff| {np.abs(refs.numpy() - tf_refs).max():.2e}, "
        f"relative {(np.abs(refs.numpy() - tf_refs).max(axis=(1, 2)) / np.abs(tf_refs).max(axis=(1, 2))).max():.2e}"
    )
    generator = torch.Generator().manual_seed(0)
    cams = torch.nn.functional.interpolate(torch.rand(len(refs), 1, 7, 7, generator=generator), size=(224, 224), mode="bilinear")[:, 0]
    delta = (spearman(cams, refs) - spearman(cams, refs_pil)).abs()
    print(f"  decoding the heatmaps with PIL instead moves ρ (random 7×7 CAMs) by up to {delta.max():.4f} (mean {delta.mean():.4f})")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("tf", "compare"):
        raise SystemExit(__doc__)
    (tf_side if sys.argv[1] == "tf" else compare)(Path(sys.argv[2]))

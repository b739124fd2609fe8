"""Writes this folder: three small JPEGs and ``tf.io.decode_jpeg``'s output for each (.npy, uint8).

Needs TensorFlow, which alignbench does not (run it in a separate venv: ``pip install tensorflow-cpu
pillow``); the test suite only reads what it wrote. Made with TensorFlow 2.21.0 from the first image
of ../shared/data/imagenet-samples-256, squashed to 48×40:

    python tests/data/tf_decode/make_fixture.py

tf_rgb_q95_420: TF's own encoder at its defaults (quality 95, 4:2:0 chroma), as ClickMe-style
records are usually written; pil_rgb_q75_444: PIL at quality 75 without chroma subsampling;
tf_gray_q95: a one-channel JPEG, as ClickMe heatmaps are.
"""

import io
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

HERE = Path(__file__).resolve().parent
SOURCE = sorted((HERE.parents[3] / "shared" / "data" / "imagenet-samples-256" / "images").iterdir())[0]


def main() -> None:
    rgb = Image.open(SOURCE).convert("RGB").resize((48, 40), Image.BILINEAR)
    pil = io.BytesIO()
    rgb.save(pil, "JPEG", quality=75, subsampling=0)
    files = {
        "tf_rgb_q95_420.jpg": tf.io.encode_jpeg(np.asarray(rgb)).numpy(),
        "pil_rgb_q75_444.jpg": pil.getvalue(),
        "tf_gray_q95.jpg": tf.io.encode_jpeg(np.asarray(rgb.convert("L"))[:, :, None]).numpy(),
    }
    for name, data in files.items():
        (HERE / name).write_bytes(data)
        np.save(HERE / f"{name[:-4]}.tf_decoded.npy", tf.io.decode_jpeg(data).numpy())  # TF's defaults


if __name__ == "__main__":
    main()

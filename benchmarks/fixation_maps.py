"""Time the fixation density and centre bias of the NUS scene set against scipy.ndimage's Gaussian.

    .venv/bin/python benchmarks/fixation_maps.py [--data-dir ../shared/data/nus-scene-500]

On the set's largest image (3888×2592, σ = 0.03 × 3888 = 116.6 px, a 933-tap kernel) it times
``scipy.ndimage.gaussian_filter(mode="reflect")`` of the fixation map (the reference), alignbench's
sparse blur (the density's path) and its FFT blur (the centre bias's path), and prints each as a ratio
to the reference with the largest difference relative to the map's maximum. Then it computes every
image's density and centre bias once into a fresh cache (the first run on the dataset) and reads them
again (every later run), and prints the cache's size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "nus-scene-500"))
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="alignbench-fixation-maps-")
    os.environ["ALIGNBENCH_CACHE"] = cache
    from scipy.ndimage import gaussian_filter

    from alignbench.datasets import _fixation_maps as maps
    from alignbench.datasets import open_dataset

    try:
        dataset = open_dataset("nus-scene", args.data_dir)
        big = max(range(len(dataset)), key=lambda i: dataset.sizes[i][0] * dataset.sizes[i][1])
        height, width = dataset.sizes[big]
        sigma = maps.default_sigma(height, width)
        histogram = maps.fixation_map(dataset.fixations[big], height, width)
        timings, results = {}, {}
        for name, blur in (
            ("scipy.ndimage", lambda: gaussian_filter(histogram, sigma, mode="reflect")),
            ("sparse", lambda: maps.gaussian_blur(histogram, sigma)),
            ("fft", lambda: maps.blur_fft(histogram, sigma)),
        ):
            start = time.perf_counter()
            results[name] = blur()
            timings[name] = time.perf_counter() - start
        reference = results["scipy.ndimage"]
        print(f"largest image {width}×{height}, {len(dataset.fixations[big])} fixations, σ {sigma:.1f} px")
        for name in ("sparse", "fft"):
            error = np.abs(results[name] - reference).max() / reference.max()
            print(
                f"  {name}: {timings[name]:.2f} s, {timings['scipy.ndimage'] / timings[name]:.1f}× faster than "
                f"scipy.ndimage ({timings['scipy.ndimage']:.2f} s); max |diff| / max {error:.1e}"
            )
        reader = dataset.reader()
        for what in ("first", "cached"):
            start = time.perf_counter()
            for index in range(len(dataset)):
                reader.density(index)
            densities = time.perf_counter() - start
            start = time.perf_counter()
            for index in range(len(dataset)):
                reader.baseline(index)
            baselines = time.perf_counter() - start
            print(f"{what} pass over {len(dataset)} images: densities {densities:.1f} s, centre biases {baselines:.1f} s")
        size = sum(f.stat().st_size for f in Path(cache, "fixation-maps").rglob("*.npy"))
        print(f"cache: {size / 2**30:.2f} GiB")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()

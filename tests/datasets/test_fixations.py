"""Eye-tracking datasets: ``fixations`` (CSV or fixation-point maps), ``nus-scene`` and ``scene-sample``.

The density and the centre bias are checked against direct transcriptions of their definitions
(pysaliency's fixation map, ``scipy.ndimage.gaussian_filter``), the NUS reader against the converted
CSV of the same data, and bad input against one-line errors before anything is stored.
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

from alignbench.datasets import DATASETS, SCENE_SAMPLE_DIR, collate, open_dataset, reopen_dataset, torch_dataset
from alignbench.datasets._fixation_maps import SPARSE_LINES, blur_fft, blur_sparse, centre_bias, gaussian_blur, gaussian_kernel
from alignbench.errors import DatasetError
from alignbench.models.preprocessing import Preprocessing
from alignbench.testing.cli import invoke, one_line_error
from alignbench.testing.tolerance import EPS64, float32_bound, float32_relative

PRE = Preprocessing((32, 32), (0.5,) * 3, (0.5,) * 3)


# --- transcriptions --------------------------------------------------------------------------------


def pysaliency_fixation_map(xs, ys, height: int, width: int) -> np.ndarray:
    """pysaliency ``FixationMap._saliency_map`` without the blur: ``ff = vstack([ys.astype(int),
    xs.astype(int)])``, ``fixation_map[int(y), int(x)] += 1`` (numba_utils._fill_fixation_map). NUS/MIT
    coordinates reach −1 < x ≤ w − 1, which ``astype(int)`` truncates to 0 for −1 < x < 0."""
    fixation_map = np.zeros((height, width))
    for x, y in zip(np.asarray(xs).astype(int), np.asarray(ys).astype(int)):
        fixation_map[y, x] += 1
    return fixation_map


def reference_density(xs, ys, height: int, width: int, sigma: float) -> np.ndarray:
    """pysaliency's blurred fixation map (``gaussian_filter(map, kernel_size, mode='reflect')``, its
    ``convolution_mode`` default), normalised to sum 1."""
    blurred = gaussian_filter(pysaliency_fixation_map(xs, ys, height, width), sigma, mode="reflect")
    return blurred / blurred.sum()


def density_tolerance(reference: np.ndarray, sigma: float, size: tuple[int, int]) -> np.ndarray:
    """float32 storage (a few relative roundings) plus the float64 FFT convolution's error, bounded by a
    float64 sum of the padded line's length of terms no larger than the map's maximum."""
    padded = max(size) + 2 * (gaussian_kernel(sigma).size // 2)
    return float32_relative(4) * np.abs(reference) + float32_bound(padded, float(reference.max()), eps=EPS64)


# --- synthetic folders -----------------------------------------------------------------------------


def _images(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[str]:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = []
    for k, (height, width) in enumerate(sizes):
        name = f"im{k}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / "images" / name)
        names.append(name)
    return names


def _csv_folder(root: Path, sizes: list[tuple[int, int]], fixations: list[list[tuple[float, float]]]) -> Path:
    names = _images(root, sizes)
    lines = ["image,subject,x,y"] + [f"{names[k]},1,{x!r},{y!r}" for k, points in enumerate(fixations) for x, y in points]
    (root / "fixations.csv").write_text("\n".join(lines) + "\n")
    return root


def _random_fixations(rng, sizes, counts) -> list[list[tuple[float, float]]]:
    # the whole allowed range: −1 < x ≤ w − 1, −1 < y ≤ h − 1
    return [[(float(rng.uniform(-0.999, w - 1)), float(rng.uniform(-0.999, h - 1))) for _ in range(n)] for (h, w), n in zip(sizes, counts)]


# --- readers ---------------------------------------------------------------------------------------


def test_nus_scene_reader_equals_the_csv_layout(shared_data: Path) -> None:
    """All 43,894 fixations of the official .mat layout, coordinates and per-image order (observers in
    order, each observer's fixations in time order), equal the converted fixations.csv, read as the
    ``fixations`` layout; so do the image sizes."""
    root = shared_data / "nus-scene-500"
    nus = open_dataset("nus-scene", root)
    rows = list(csv.DictReader(open(root / "fixations.csv", newline="")))
    expected: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        expected.setdefault(Path(row["image"]).stem, []).append((float(row["x"]), float(row["y"])))
    assert len(rows) == 43_894 == sum(nus.fixation_counts())
    assert nus.image_ids() == [f"{k:03d}" for k in range(1, 501)]
    for image_id, points in zip(nus.image_ids(), nus.fixations):
        np.testing.assert_array_equal(points, np.array(expected.get(image_id, []), dtype=np.float64).reshape(-1, 2))
    sizes = {Path(r["image"]).stem: (int(r["height"]), int(r["width"])) for r in csv.DictReader(open(root / "sizes.csv"))}
    assert nus.sizes == [sizes[i] for i in nus.image_ids()]
    assert nus.has_fixations and nus.has_reference and not nus.has_labels


def test_scene_sample_is_the_nus_data_in_the_fixations_layout(shared_data: Path) -> None:
    sample = open_dataset("scene-sample")
    nus = open_dataset("nus-scene", shared_data / "nus-scene-500")
    assert len(sample) == 10 and sample.has_fixations
    assert (SCENE_SAMPLE_DIR / "LICENSE.txt").read_text().startswith("The MIT License")
    for k, image_id in enumerate(sample.image_ids()):
        j = nus.image_ids().index(image_id)
        assert sample.sizes[k] == nus.sizes[j] == (256, 256)
        np.testing.assert_array_equal(sample.fixations[k], nus.fixations[j])
        assert (SCENE_SAMPLE_DIR / "images" / f"{image_id}.jpg").read_bytes() == nus.images[j].read_bytes()


def test_fixation_point_maps_are_read_as_fixations(tmp_path: Path) -> None:
    """A non-zero pixel (row r, column c) of fixations/NAME.png is a fixation at (x, y) = (c, r);
    MIT1003's ``_fixPts`` suffix is dropped; an all-black map is an image without fixations."""
    sizes = [(9, 12), (5, 7)]
    names = _images(tmp_path, sizes)
    (tmp_path / "fixations").mkdir()
    first = np.zeros(sizes[0], dtype=np.uint8)
    first[0, 11] = first[4, 3] = first[8, 0] = 255
    Image.fromarray(first).save(tmp_path / "fixations" / "im0_fixPts.png")
    Image.fromarray(np.zeros(sizes[1], dtype=np.uint8)).save(tmp_path / "fixations" / "im1.png")
    dataset = open_dataset("fixations", tmp_path)
    assert dataset.image_ids() == [Path(n).stem for n in names]
    np.testing.assert_array_equal(dataset.fixations[0], [[11, 0], [3, 4], [0, 8]])
    assert dataset.fixation_counts() == [3, 0]
    # colour maps: any non-zero channel, the alpha channel (opaque everywhere) not counted
    rgba = np.zeros((*sizes[1], 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[2, 6, 0] = 1
    Image.fromarray(rgba, "RGBA").save(tmp_path / "fixations" / "im1.png")
    np.testing.assert_array_equal(open_dataset("fixations", tmp_path).fixations[1], [[6, 2]])


# --- density and centre bias -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "sigma"),
    [((9, 13), 1.5), ((9, 13), None), ((6, 5), 11.0), ((20, 14), 0.0)],
)
def test_density_is_the_blurred_fixation_map(tmp_path: Path, size: tuple[int, int], sigma: float | None) -> None:
    """Sums to 1 and equals pysaliency's blurred fixation map: duplicates counted, the edges of the
    coordinate range (−0.5 → pixel 0, w − 1 exactly), a kernel longer than the image (σ = 11 on 6×5)."""
    rng = np.random.default_rng(1)
    height, width = size
    points = _random_fixations(rng, [size], [7])[0] + [(-0.5, -0.25), (width - 1, height - 1), (2.5, 3.75), (2.5, 3.75)]
    dataset = open_dataset("fixations", _csv_folder(tmp_path, [size], [points]), fixation_sigma=sigma)
    density = dataset.reader().density(0)
    used = 0.03 * max(size) if sigma is None else sigma
    xs, ys = np.array(points).T
    expected = reference_density(xs, ys, height, width, used) if used > 0 else pysaliency_fixation_map(xs, ys, height, width) / len(points)
    assert density.dtype == np.float32 and density.shape == size
    assert abs(float(density.astype(np.float64).sum()) - 1) <= float32_relative(density.size)
    assert (np.abs(density - expected) <= density_tolerance(expected, max(used, 1e-9), size)).all()


@pytest.mark.parametrize(("size", "sigma"), [((7, 11), 1.3), ((7, 11), 9.0), ((5, 3), 20.0), ((1, 1), 2.0), ((33, 40), 2.5)])
def test_both_blurs_equal_gaussian_filter(size: tuple[int, int], sigma: float) -> None:
    """The sparse products and the FFT both equal ``gaussian_filter(mode="reflect")``, including
    kernels longer than the image (reflected more than once); ``gaussian_blur`` takes the FFT for a
    map with more than SPARSE_LINES non-zero columns."""
    rng = np.random.default_rng(3)
    sparse = np.zeros(size)
    np.add.at(sparse, (rng.integers(0, size[0], 6), rng.integers(0, size[1], 6)), 1.0)
    dense = rng.random(size)
    for array in (sparse, dense):
        expected = gaussian_filter(array, sigma, mode="reflect")
        rows, columns = np.flatnonzero(array.any(axis=1)), np.flatnonzero(array.any(axis=0))
        # float64 sums over the kernel's taps (a few more for the reflected FFT line), terms ≤ max
        bound = float32_bound(2 * max(size) + 2 * gaussian_kernel(sigma).size, float(np.abs(array).sum()), eps=EPS64)
        assert np.abs(blur_sparse(array, sigma, rows, columns) - expected).max() <= bound
        assert np.abs(blur_fft(array, sigma) - expected).max() <= bound
    wide = np.zeros((3, SPARSE_LINES + 1))
    wide[1] = rng.random(SPARSE_LINES + 1)
    np.testing.assert_array_equal(gaussian_blur(wide, 1.5), blur_fft(wide, 1.5))


def test_centre_bias_is_the_leave_one_out_average_density(tmp_path: Path) -> None:
    """Image i's baseline: the other images' fixations rescaled to its size, each image's map weighted
    1/N_j, blurred with image i's sigma, normalised. Transcribed per image (the mean of the other
    images' densities at image i's size); for images of image i's own size that is the mean of their
    densities as served."""
    rng = np.random.default_rng(2)
    sizes = [(10, 16), (10, 16), (7, 9), (12, 6)]
    points = _random_fixations(rng, sizes, [5, 3, 6, 0])  # the last image has no fixations
    dataset = open_dataset("fixations", _csv_folder(tmp_path, sizes, points))
    reader = dataset.reader()
    for i, (height, width) in enumerate(sizes):
        sigma = 0.03 * max(height, width)
        others = []
        for j, fixations in enumerate(points):
            if j == i or not fixations:
                continue
            xs, ys = np.array(fixations).T
            scaled_x, scaled_y = xs * width / sizes[j][1], ys * height / sizes[j][0]
            # rescaled into −w/w_j < x: the pixel is floor, clipped into the image
            scaled_x = np.clip(np.floor(scaled_x), 0, width - 1)
            scaled_y = np.clip(np.floor(scaled_y), 0, height - 1)
            others.append(reference_density(scaled_x, scaled_y, height, width, sigma))
        expected = np.mean(others, axis=0)
        expected /= expected.sum()
        baseline = reader.baseline(i)
        assert abs(float(baseline.astype(np.float64).sum()) - 1) <= float32_relative(baseline.size)
        # served from one blur of all images' maps minus the image's own density: that subtraction
        # adds float64 rounding of the total, at most one unit of mass per image
        padded = max(height, width) + 2 * (gaussian_kernel(sigma).size // 2)
        tolerance = density_tolerance(expected, sigma, (height, width)) + float32_bound(padded, len(sizes), eps=EPS64)
        assert (np.abs(baseline - expected) <= tolerance).all()
        direct = centre_bias(i, dataset.fixations, dataset.sizes, sigma)
        assert (np.abs(baseline - direct) <= tolerance).all()
    # images of one size: the mean of the other images' densities as served
    same = open_dataset("fixations", _csv_folder(tmp_path / "same", [(8, 11)] * 3, _random_fixations(rng, [(8, 11)] * 3, [4, 2, 5])))
    served = same.reader()
    mean = (served.density(1).astype(np.float64) + served.density(2)) / 2
    assert (np.abs(served.baseline(0) - mean) <= float32_relative(8) * mean + float32_bound(8 + 2 * 2, float(mean.max()), eps=EPS64)).all()


def test_other_fixations_are_every_other_image_rescaled(tmp_path: Path) -> None:
    sizes = [(10, 16), (5, 8), (20, 4)]
    points = [[(1.0, 2.0), (15.0, 9.0)], [(3.5, 4.0)], [(0.0, 19.0), (-0.5, 0.0)]]
    dataset = open_dataset("fixations", _csv_folder(tmp_path, sizes, points))
    sample = dataset.reader().read(1)
    expected = [(1.0 * 8 / 16, 2.0 * 5 / 10), (15.0 * 8 / 16, 9.0 * 5 / 10), (0.0, 19.0 * 5 / 20), (-0.5 * 8 / 4, 0.0)]
    np.testing.assert_array_equal(sample.other_fixations, expected)


def test_items_and_collate_carry_the_fixation_keys_as_lists(tmp_path: Path) -> None:
    sizes = [(10, 16), (7, 9), (12, 6)]
    points = [[(1.0, 2.0), (15.0, 9.0)], [], [(0.0, 11.0)]]
    dataset = open_dataset("fixations", _csv_folder(tmp_path, sizes, points))
    items = [torch_dataset(dataset, PRE)[k] for k in range(3)]
    batch = collate(items)
    for key in ("stimulus_size", "fixations", "density", "baseline", "other_fixations"):
        assert isinstance(batch[key], list) and len(batch[key]) == 3
        assert all(entry is item[key] for entry, item in zip(batch[key], items))
    assert batch["stimulus_size"] == sizes
    assert [f.shape for f in batch["fixations"]] == [(2, 2), (0, 2), (1, 2)]
    assert batch["fixations"][0].dtype == np.float64 and batch["density"][0].dtype == np.float32
    assert [d.shape for d in batch["density"]] == sizes == [b.shape for b in batch["baseline"]]
    assert [o.shape[0] for o in batch["other_fixations"]] == [1, 3, 2]
    # the image without fixations is served, its reference undefined with the reason
    assert np.isnan(batch["density"][1]).all() and batch["reference_undefined"] == [None, "the image has no fixations", None]
    # the reference: the density resized to the model input as a folder heatmap is (antialiased bilinear)
    density = torch.from_numpy(batch["density"][0])[None, None]
    resized = F.interpolate(density, size=PRE.input_size, mode="bilinear", align_corners=False, antialias=True)[0, 0]
    assert torch.equal(batch["reference"][0], resized)
    # other datasets' batches have none of them
    plain = collate([torch_dataset(open_dataset("sample"), PRE)[0]])
    assert not {"stimulus_size", "fixations", "density", "baseline", "other_fixations"} & plain.keys()


# --- identity: the sigma ---------------------------------------------------------------------------


def test_the_sigma_is_part_of_the_fingerprint(tmp_path: Path) -> None:
    root = _csv_folder(tmp_path, [(6, 6)], [[(1.0, 1.0)]])
    fingerprints = {open_dataset("fixations", root, fixation_sigma=s).fingerprint for s in (None, 2.0, 3.0)}
    assert len(fingerprints) == 3
    assert open_dataset("fixations", root, fixation_sigma=2).fingerprint == open_dataset("fixations", root, fixation_sigma=2.0).fingerprint
    reopened = reopen_dataset("fixations", str(root), open_dataset("fixations", root, fixation_sigma=3.0).fingerprint)
    assert reopened.fixation_sigma == 3.0
    assert [name for name, spec in DATASETS.items() if spec.has_fixations] == ["fixations", "nus-scene", "scene-sample"]
    assert not open_dataset("sample").has_fixations
    with pytest.raises(DatasetError, match="applies to eye-tracking datasets"):
        open_dataset("sample", fixation_sigma=2.0)
    with pytest.raises(DatasetError, match="a number ≥ 0"):
        open_dataset("fixations", root, fixation_sigma=-1.0)


# --- bad input -------------------------------------------------------------------------------------


def _refused(tmp_path: Path, dataset: str, data_dir: Path, *fragments: str) -> None:
    db = tmp_path / "store.db"
    result = invoke("score", "--dataset", dataset, "--data-dir", data_dir, "--db", f"sqlite:///{db}")
    one_line_error(result, *fragments)
    if db.exists():
        con = sqlite3.connect(db)
        try:
            assert con.execute("SELECT count(*) FROM run").fetchone() == (0,)
        finally:
            con.close()


@pytest.mark.parametrize(
    ("x", "y", "accepted"),
    [(-0.999, 0.0, True), (15.0, 9.0, True), (-1.0, 0.0, False), (15.01, 0.0, False), (3.0, 9.5, False), (float("nan"), 1.0, False)],
)
def test_fixations_outside_the_image_are_refused(tmp_path: Path, x: float, y: float, accepted: bool) -> None:
    """−1 < x ≤ w − 1, −1 < y ≤ h − 1 (the 1-based MATLAB range 0 < x ≤ w, minus 1)."""
    root = _csv_folder(tmp_path / "data", [(10, 16)], [[(2.0, 2.0), (x, y)]])
    if accepted:
        assert open_dataset("fixations", root).fixation_counts() == [2]
    else:
        _refused(tmp_path, "fixations", root, "fixations.csv, line 3", "outside image im0.png", "-1 < x <= 15")


def test_bad_csv_rows_and_missing_images_are_refused(tmp_path: Path) -> None:
    root = _csv_folder(tmp_path / "data", [(10, 16)], [[(2.0, 2.0)]])
    csv_path = root / "fixations.csv"
    good = csv_path.read_text()
    csv_path.write_text(good + "gone.png,1,1.0,1.0\n")
    _refused(tmp_path, "fixations", root, "fixations.csv, line 3", "'gone.png' is not in")
    csv_path.write_text(good + "im0.jpg,1,1.0,1.0\n")  # another extension: another file
    _refused(tmp_path, "fixations", root, "fixations.csv, line 3", "'im0.jpg' is not in")
    csv_path.write_text(good + "im0,1,1.0,1.0\n")  # the stem names the image
    assert open_dataset("fixations", root).fixation_counts() == [2]
    csv_path.write_text(good + "im0.png,1,left,1.0\n")
    _refused(tmp_path, "fixations", root, "fixations.csv, line 3", "must be numbers")
    csv_path.write_text(good + "im0.png,1\n")
    _refused(tmp_path, "fixations", root, "fixations.csv, line 3", "expected 4 columns")
    csv_path.write_text("name,col,row\nim0.png,1,1\n")
    _refused(tmp_path, "fixations", root, "fixations.csv, line 1", "image,x,y")


def test_a_fixation_map_of_another_size_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _images(root, [(9, 12)])
    (root / "fixations").mkdir()
    Image.fromarray(np.zeros((12, 9), dtype=np.uint8)).save(root / "fixations" / "im0.png")
    _refused(tmp_path, "fixations", root, "fixations/im0.png is 9×12", "its image im0.png is 12×9", "must have its image's size")


def test_an_unreadable_mat_is_refused(tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "nus"
    (root / "stimuli").mkdir(parents=True)
    (root / "tidy").mkdir()
    for name in ("001.jpg", "002.jpg"):
        (root / "stimuli" / name).write_bytes((shared_data / "nus-scene-500" / "stimuli" / name).read_bytes())
    (root / "tidy" / "fixations.mat").write_bytes(b"not a MATLAB file at all" * 10)
    _refused(tmp_path, "nus-scene", root, "cannot read", "tidy/fixations.mat")
    from scipy.io import savemat

    savemat(root / "tidy" / "fixations.mat", {"fixations": np.zeros((3, 12))})
    _refused(tmp_path, "nus-scene", root, "tidy/fixations.mat", "one row per stimulus (2 in stimuli/)")
    cells = np.empty((2, 1), dtype=object)
    cells[0, 0] = np.array([[10.0, 20.0, 0.1, 0.2]])
    cells[1, 0] = np.array([[257.5, 3.0, 0.1, 0.2]])  # y beyond the 256-row image (1-based ≤ 256)
    savemat(root / "tidy" / "fixations.mat", {"fixations": cells})
    _refused(tmp_path, "nus-scene", root, "stimulus 2 (002.jpg), fixation 1", "outside image 002.jpg")
    cells[1, 0] = np.array([[256.0, 3.0, 0.1, 0.2]])  # the last row, 1-based: accepted
    savemat(root / "tidy" / "fixations.mat", {"fixations": cells})
    dataset = open_dataset("nus-scene", root)
    np.testing.assert_array_equal(dataset.fixations[1], [[2.0, 255.0]])


def test_a_study_gives_each_eye_tracking_dataset_its_sigma(tmp_path: Path) -> None:
    from alignbench.scoring.study import StudyError, load_study

    path = tmp_path / "study.toml"
    path.write_text(
        '[[model]]\nname = "efficientnet_lite0"\n[[dataset]]\nname = "scene-sample"\nfixation_sigma = 5\n'
        '[[dataset]]\nname = "scene-sample"\n'
    )
    assert [r.fixation_sigma for r in load_study(path).requests()] == [5.0, None]
    path.write_text('[[model]]\nname = "efficientnet_lite0"\n[[dataset]]\nname = "sample"\nfixation_sigma = 5\n')
    with pytest.raises(StudyError, match="only for eye-tracking datasets"):
        load_study(path)


def test_an_image_without_fixations_is_scored_as_undefined(tmp_path: Path) -> None:
    """Served with N = 0, not refused: every metric (Spearman against the undefined density included) is NULL with the reason."""
    from alignbench.models import ModelRequest
    from alignbench.scoring import ScoreRequest, score

    root = _csv_folder(tmp_path / "data", [(40, 50), (30, 30), (36, 48)], [[(3.0, 4.0), (20.0, 10.0)], [], [(10.0, 11.0)]])
    db = tmp_path / "store.db"
    request = ScoreRequest(model=ModelRequest("test_convnext", pretrained=False), dataset="fixations", data_dir=root, workers=0)
    result = score(request, db=f"sqlite:///{db}")
    assert (result.n_scored, result.n_skipped, result.status) == (2, 1, "complete")
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT image_id, spearman, skip_reason FROM image_score WHERE run_id = ?", (result.run_id,)).fetchall()
    finally:
        con.close()
    assert [image for image, rho, reason in rows if rho is None] == ["im1"]
    # every metric of the default set (the fixation metrics and Spearman) is undefined, each saying why
    reasons = dict(part.split(": ", 1) for part in next(reason for image, _, reason in rows if image == "im1").split("; "))
    assert set(reasons) == set(result.metrics) and "spearman" in reasons
    assert set(reasons.values()) == {"the image has no fixations"}

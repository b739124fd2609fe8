"""ClickMe without TensorFlow: the TFRecord/Example codec, shards written here and read back, bad
records, the ClickMe preprocessing against an independent numpy port of the TF code, the two
protocols on a case where the crop matters, and the download against a local HTTP server."""

from __future__ import annotations

import math
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from alignbench.datasets import (
    CLICKME_VAL_SHARDS,
    ClickMeRecord,
    collate,
    data_loader,
    iter_clickme_shard,
    open_dataset,
    torch_dataset,
    write_clickme_shard,
)
from alignbench.datasets import _tfrecord as tfrecord
from alignbench.datasets._pipeline import clickme_blur, clickme_blur_kernel, clickme_item, clickme_reference, resize_bilinear
from alignbench.errors import DatasetError
from alignbench.metrics.spearman import spearman, spearman_from_ranks
from alignbench.models.preprocessing import Preprocessing
from alignbench.testing.tolerance import EPS64, float32_bound, float32_relative

PREP = Preprocessing((224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def make_records(n: int, seed: int = 0) -> list[ClickMeRecord]:
    """Smooth random images and sparse click heatmaps, 256×256 like ClickMe's."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
        image = np.kron(coarse, np.ones((32, 32, 1), dtype=np.uint8))
        heatmap = np.zeros((256, 256), dtype=np.uint8)
        for y, x in rng.integers(20, 236, size=(3, 2)):
            heatmap[y - 12 : y + 12, x - 12 : x + 12] = 255
        records.append(ClickMeRecord(image, heatmap, label=int(rng.integers(0, 1000)) if i else 7))
    return records


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALIGNBENCH_CACHE", str(cache))
    return cache


# --- codec ----------------------------------------------------------------------------------------


def test_example_bytes_match_the_protobuf_wire_format():
    # Example{features{feature{key: "label" value{int64_list{value: 7}}}}}, encoded by hand from
    # the wire format: tag 0x0a = field 1 length-delimited, 0x12 = field 2, 0x1a = field 3.
    expected = bytes.fromhex("0a100a0e0a05") + b"label" + bytes.fromhex("12051a030a0107")
    assert tfrecord.encode_example({"label": 7}) == expected
    assert tfrecord.parse_example(expected) == {"label": [7]}


def test_example_round_trip_and_unpacked_and_negative_ints():
    payload = tfrecord.encode_example({"image": b"\xff\xd8jpeg", "label": -3, "scores": [0.5, -2.0]})
    assert tfrecord.parse_example(payload) == {"image": [b"\xff\xd8jpeg"], "label": [-3], "scores": [0.5, -2.0]}
    # Int64List written unpacked (wire type 0), as old writers do: 0x08 = field 1 varint.
    unpacked = bytes.fromhex("0a0d0a0b0a016e12061a0408020803")
    assert tfrecord.parse_example(unpacked) == {"n": [2, 3]}


def test_record_framing_uses_masked_crc32c():
    # crc32c(b"123456789") = 0xE3069283 (the CRC-32C check value); TFRecord masks it.
    crc = 0xE3069283
    assert tfrecord.masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    framed = tfrecord.frame_record(b"abc")
    assert len(framed) == 8 + 4 + 3 + 4 and framed[:8] == (3).to_bytes(8, "little") and framed[12:15] == b"abc"


def test_shard_written_and_read_back(tmp_path):
    records = make_records(3)
    assert write_clickme_shard(tmp_path / "val-0.tfrecords", records) == 3
    read = list(iter_clickme_shard(tmp_path / "val-0.tfrecords"))
    assert [offset for offset, _ in read][0] == 0
    assert [r.label for _, r in read] == [r.label for r in records]
    assert all(r.image[:2] == b"\xff\xd8" and r.heatmap[:2] == b"\xff\xd8" for _, r in read)  # JPEG


# --- dataset from shards --------------------------------------------------------------------------


def _shards(directory: Path, sizes: list[int]) -> list[ClickMeRecord]:
    directory.mkdir(parents=True, exist_ok=True)
    everything = []
    for i, size in enumerate(sizes):
        records = make_records(size, seed=i)
        write_clickme_shard(directory / f"val-{i}.tfrecords", records)
        everything += records
    return everything


def test_open_from_data_dir_lists_ids_labels_in_name_order(tmp_path, isolated_cache):
    data = tmp_path / "shards"
    records = _shards(data, [2] * 11)  # val-0 … val-10: val-10 sorts after val-9
    dataset = open_dataset("clickme-val", data)
    assert len(dataset) == 22 and dataset.ceiling == 0.65753 and not dataset.has_boxes
    assert dataset.image_ids()[:3] == ["val-0:0", "val-0:1", "val-1:0"]
    assert dataset.image_ids()[-2:] == ["val-10:0", "val-10:1"]
    assert dataset.labels() == [r.label for r in records]
    again = open_dataset("clickme-val", data)  # from the index cache: same answer
    assert again.fingerprint == dataset.fingerprint and again.image_ids() == dataset.image_ids()
    assert len(list((isolated_cache / "clickme" / "index").glob("*.json"))) == 11
    for index in (isolated_cache / "clickme" / "index").glob("*.json"):
        index.unlink()  # a lost index is rebuilt from the shards
    assert open_dataset("clickme-val", data).labels() == dataset.labels()
    record = make_records(1, seed=99)[0]
    write_clickme_shard(data / "val-3.tfrecords", [(record.image, record.heatmap, 5), (record.image, record.heatmap, 6)])
    changed = open_dataset("clickme-val", data)
    assert changed.fingerprint != dataset.fingerprint and changed.labels()[6:8] == [5, 6]  # content changed


def test_items_batches_and_scores_through_dataloader_workers(tmp_path, isolated_cache):
    data = tmp_path / "shards"
    _shards(data, [3, 2])
    dataset = open_dataset("clickme-val", data)
    items = torch_dataset(dataset, PREP)
    assert items[4]["image_id"] == "val-1:1"  # the parent opened a shard before forking workers
    loader = torch.utils.data.DataLoader(items, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    seen = sorted(int(i) for batch in batches for i in batch["index"])
    assert seen == list(range(5))
    batch = batches[0]
    assert batch["image"].shape == (2, 3, 224, 224) and batch["image"].dtype == torch.float32
    assert batch["reference"].shape == (2, 224, 224) and batch["reference_ranks"].shape == (2, 224 * 224)
    assert batch["boxes"].shape == (2, 0, 4) and batch["box_counts"].tolist() == [0, 0]
    assert batch["label"].tolist() == dataset.labels()[:2]
    # The reference scored against itself, both ways the scorer can: ρ = 1.
    assert spearman(batch["reference"], batch["reference"]).tolist() == [1.0, 1.0]
    assert spearman_from_ranks(batch["reference"], batch["reference_ranks"]).tolist() == [1.0, 1.0]
    # Resume: skip what is done, limit counts from the start of the dataset.
    part = torch_dataset(dataset, PREP, skip_ids={"val-0:1"}, limit=4)
    assert [part[k]["image_id"] for k in range(len(part))] == ["val-0:0", "val-0:2", "val-1:0"]


def test_reference_ranks_are_cached_across_runs(tmp_path, isolated_cache):
    data = tmp_path / "shards"
    _shards(data, [2])
    dataset = open_dataset("clickme-val", data)
    first = torch_dataset(dataset, PREP)[1]
    filled = list((isolated_cache / "reference-ranks").glob("*.filled"))
    assert len(filled) == 1 and filled[0].read_bytes() == b"\x00\x01"
    again = torch_dataset(open_dataset("clickme-val", data), PREP)[1]  # a later run reads the row
    assert torch.equal(first["reference_ranks"], again["reference_ranks"])
    paper_224 = torch_dataset(dataset, PREP, "paper")[1]  # paper at 224: the same reference, same rows
    assert torch.equal(paper_224["reference_ranks"], first["reference_ranks"])
    assert len(list((isolated_cache / "reference-ranks").glob("*.filled"))) == 1


# --- bad input ------------------------------------------------------------------------------------


def _offsets(path: Path) -> list[int]:
    return [offset for offset, _ in iter_clickme_shard(path)]


def test_corrupt_record_names_file_and_offset(tmp_path, isolated_cache):
    data = tmp_path / "shards"
    _shards(data, [3])
    shard = data / "val-0.tfrecords"
    bad_offset = _offsets(shard)[2]
    content = bytearray(shard.read_bytes())
    content[bad_offset + 12 + 40] ^= 0xFF  # a byte inside record 2's payload
    shard.write_bytes(bytes(content))
    with pytest.raises(DatasetError, match=rf"val-0\.tfrecords .*at byte {bad_offset}: .*fails its CRC"):
        open_dataset("clickme-val", data)


def test_truncated_shard_names_file_and_offset(tmp_path, isolated_cache):
    data = tmp_path / "shards"
    _shards(data, [3])
    shard = data / "val-0.tfrecords"
    last = _offsets(shard)[2]
    shard.write_bytes(shard.read_bytes()[: last + 100])
    with pytest.raises(DatasetError, match=rf"val-0\.tfrecords .*at byte {last}: .*truncated"):
        open_dataset("clickme-val", data)
    shard.write_bytes(shard.read_bytes()[: last + 5])
    with pytest.raises(DatasetError, match=rf"at byte {last}: the file ends inside a record header"):
        open_dataset("clickme-val", data)


def test_not_a_clickme_record_and_wrong_sizes(tmp_path, isolated_cache):
    data = tmp_path / "shards"
    data.mkdir()
    tfrecord.write_records(data / "val-0.tfrecords", [tfrecord.encode_example({"image": b"x", "label": 1})])
    with pytest.raises(DatasetError, match=r"at byte 0: no heatmap feature"):
        open_dataset("clickme-val", data)
    small = ClickMeRecord(np.zeros((128, 128, 3), np.uint8), np.zeros((128, 128), np.uint8), 3)
    write_clickme_shard(data / "val-0.tfrecords", [small])
    dataset = open_dataset("clickme-val", data)  # the index needs no decoding
    with pytest.raises(DatasetError, match=r"at byte 0: image 128×128.*256×256"):
        torch_dataset(dataset, PREP)[0]


def test_worker_errors_keep_one_line(tmp_path, isolated_cache):
    data = tmp_path / "shards"
    data.mkdir()
    small = ClickMeRecord(np.zeros((128, 128, 3), np.uint8), np.zeros((128, 128), np.uint8), 3)
    write_clickme_shard(data / "val-0.tfrecords", [small])
    loader = data_loader(open_dataset("clickme-val", data), PREP, batch_size=1, num_workers=1)
    with pytest.raises(DatasetError) as caught:
        list(loader)
    assert "\n" not in caught.value.message and caught.value.message.startswith("ClickMe shard ")


def test_label_outside_the_model_classes(tmp_path, isolated_cache):
    data = tmp_path / "shards"
    data.mkdir()
    record = make_records(1)[0]
    write_clickme_shard(data / "val-0.tfrecords", [ClickMeRecord(record.image, record.heatmap, 1000)])
    dataset = open_dataset("clickme-val", data)
    with pytest.raises(DatasetError, match=r"image val-0:0 has label 1000, outside the model's 1000 classes"):
        torch_dataset(dataset, PREP, num_classes=1000)


def test_empty_data_dir(tmp_path):
    with pytest.raises(DatasetError, match=r"no \*\.tfrecords file in .*val-0\.tfrecords"):
        open_dataset("clickme-val", tmp_path)


# --- preprocessing against an independent numpy port of the TensorFlow code -----------------------


def tf_resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """tensorflow/core/kernels/image/resize_bilinear_op.cc with half_pixel_centers=True."""
    in_h, in_w = image.shape

    def axis(out_size: int, in_size: int):
        scale = in_size / out_size
        source = (np.arange(out_size) + 0.5) * scale - 0.5
        lower = np.maximum(np.floor(source), 0).astype(int)
        upper = np.minimum(np.ceil(source), in_size - 1).astype(int)
        return lower, upper, source - np.floor(source)

    ly, uy, fy = axis(out_h, in_h)
    lx, ux, fx = axis(out_w, in_w)
    top = image[ly][:, lx] + (image[ly][:, ux] - image[ly][:, lx]) * fx
    bottom = image[uy][:, lx] + (image[uy][:, ux] - image[uy][:, lx]) * fx
    return top + (bottom - top) * fy[:, None]


def tf_gaussian_kernel(size: int = 10, sigma: float = 10) -> np.ndarray:
    """Harmonization blur.py gaussian_kernel, in numpy."""
    x_range = np.arange(-(size - 1) // 2, (size - 1) // 2 + 1)
    y_range = np.arange((size - 1) // 2, -(size - 1) // 2 - 1, -1)
    xs, ys = np.meshgrid(x_range, y_range)
    kernel = np.exp(-(xs**2 + ys**2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return kernel / kernel.sum()


def tf_conv_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """tf.nn.conv2d(padding="SAME"), stride 1: pad_before = (k - 1) // 2, cross-correlation."""
    k = kernel.shape[0]
    before = (k - 1) // 2
    padded = np.pad(image, ((before, k - 1 - before), (before, k - 1 - before)))
    out = np.zeros_like(image, dtype=np.float64)
    for r in range(k):
        for c in range(k):
            out += kernel[r, c] * padded[r : r + image.shape[0], c : c + image.shape[1]]
    return out


def test_blur_kernel_matches_harmonization():
    kernel = clickme_blur_kernel()
    assert kernel.shape == (10, 10) and kernel.dtype == torch.float32
    expected = tf_gaussian_kernel()
    # float64 on both sides (exp and a 100-term sum in other orders: float32_bound(100 + 8, 1, eps=EPS64)
    # relative), then one cast to float32 (≤ EPS/2 of each value): was < 1e-8, tuned
    bound = float32_relative(1) * np.abs(expected) + float32_bound(100 + 8, float(np.abs(expected).max()), eps=EPS64)
    assert (np.abs(kernel.numpy() - expected) <= bound).all()
    # y runs 4 … -5 down the rows and x -5 … 4 along the columns: the peak (x = y = 0) is at row 4,
    # column 5, and the kernel is not symmetric about its centre.
    assert np.unravel_index(int(kernel.argmax()), (10, 10)) == (4, 5)


def test_blur_pads_same_like_tensorflow():
    impulse = torch.zeros(1, 1, 64, 64)
    impulse[0, 0, 32, 32] = 1.0
    blurred = clickme_blur(impulse)[0, 0].numpy()
    # out[i, j] = Σ k[r, c] · in[i + r - 4, j + c - 4]  ⇒  the impulse lands at out[36 - r, 36 - c] = k[r, c]
    expected = np.zeros((64, 64))
    expected[27:37, 27:37] = tf_gaussian_kernel()[::-1, ::-1]
    # each output sums 100 products with one non-zero (the impulse's, exact): the float32 kernel value, within
    # float32_bound(100 + 8, max k) of the float64 one (the cast, plus any summation order): was < 1e-7, tuned
    assert np.abs(blurred - expected).max() <= float32_bound(100 + 8, float(expected.max()))


def test_bilinear_is_half_pixel_without_antialias():
    ramp = torch.arange(256, dtype=torch.float32).expand(256, 256)[None, None]
    out = resize_bilinear(ramp, (64, 64))[0, 0, 0]
    # scale 4: output column j samples 4j + 1.5, between columns 4j + 1 and 4j + 2
    assert torch.equal(out, torch.arange(64, dtype=torch.float32) * 4 + 1.5)


def test_clickme_reference_equals_numpy_port_of_tf():
    heatmap = np.array(np.asarray(make_records(1, seed=5)[0].heatmap), dtype=np.float32)
    blurred = tf_conv_same(tf_resize_bilinear(heatmap, 64, 64), tf_gaussian_kernel())
    expected = tf_resize_bilinear(blurred, 224, 224)
    ours = clickme_reference(torch.from_numpy(heatmap)).numpy()
    assert ours.shape == (224, 224)
    # float32 vs float64: resize (4 terms), 10×10 conv (100), resize (4), all weights ≥ 0 on a heatmap ≥ 0,
    # so Σ|terms| is the value itself: float32_bound(4 + 100 + 4 + 8, expected) per pixel; and the 64 → 224
    # resize's source coordinates (≤ 64, scale 64/224 rounded) are off by ≤ float32_bound(2, 64), which
    # moves a sample by that times the largest step between neighbours, on each axis (was 1e-3 overall)
    step = max(np.abs(np.diff(blurred, axis=0)).max(), np.abs(np.diff(blurred, axis=1)).max())
    bound = float32_bound(4 + 100 + 4 + 8, 1.0) * expected + 2 * float32_bound(2, 64.0) * step
    assert (np.abs(ours - expected) <= bound).all()


# --- protocols ------------------------------------------------------------------------------------


def _band_sample():
    """A bright vertical band at columns 32..63 (of 256), in the image and in the heatmap."""
    from alignbench.datasets import ClickMeSample

    image = np.full((256, 256, 3), 20, dtype=np.uint8)
    image[:, 32:64] = 230
    heatmap = np.zeros((256, 256), dtype=np.float32)
    heatmap[:, 32:64] = 255
    boxes = np.array([[32, 0, 64, 256]], dtype=np.float32)
    return ClickMeSample(image=image, heatmap=heatmap, label=1, boxes=boxes)


def _band_centre(profile: torch.Tensor) -> float:
    """Mean column index of the columns above half height (robust to bicubic overshoot)."""
    above = (profile > (profile.max() + profile.min()) / 2).float()
    return float((above * torch.arange(len(profile))).sum() / above.sum())


def test_protocols_differ_where_the_crop_matters():
    convnext = Preprocessing((224, 224), PREP.mean, PREP.std, paper_kind="convnext")
    sample = _band_sample()
    aligned_image, aligned_ref, aligned_boxes = clickme_item(sample, convnext, "aligned")
    paper_image, paper_ref, paper_boxes = clickme_item(sample, convnext, "paper")
    # The heatmap is never cropped: both protocols give the same reference.
    assert torch.equal(aligned_ref, paper_ref)
    # Band: columns 32..63 of 256 → 28..55 of 224 under `aligned` (centre 41.5); the paper's resize
    # 224→256 and centre crop (offset 16) put the image's band at 16..47 (centre 31.5) instead.
    assert _band_centre(aligned_image[0].mean(0)) == 41.5
    assert _band_centre(paper_image[0].mean(0)) == 31.5
    # The reference is near 41.5 too, moved left by the blur: TF's SAME padding makes output column j
    # read input columns j-4 … j+5, and the kernel is nearly flat (σ = 10 over 10 taps), so its
    # centre of mass is Σ k·(c − 4) ≈ +0.55 columns at 64×64, i.e. ≈ 1.9 px at 224.
    kernel_columns = tf_gaussian_kernel().sum(axis=0)
    shift = float((kernel_columns * (np.arange(10) - 4)).sum()) * 224 / 64
    # not a rounding bound: _band_centre finds each edge on the pixel grid, so the centre within half a column
    assert _band_centre(aligned_ref.mean(0)) == pytest.approx(41.5 - shift, abs=0.5)
    assert aligned_boxes.tolist() == [[28.0, 0.0, 56.0, 224.0]]
    assert paper_boxes.tolist() == [[16.0, 0.0, 48.0, 224.0]]  # boxes follow the image
    # A perfect explanation marks the band where the model sees it. Under `aligned` that is the
    # reference itself (ρ = 1); under `paper` the model sees the cropped geometry, so the same perfect
    # explanation (the reference, resized 224→256 and cropped like the image) scores less.
    perfect_paper = torch.nn.functional.interpolate(aligned_ref[None, None], size=(256, 256), mode="bilinear")[0, :, 16:240, 16:240]
    assert spearman(aligned_ref[None], aligned_ref[None]).item() == 1.0
    assert spearman(perfect_paper, paper_ref[None]).item() < 0.9


def test_paper_without_crop_differs_only_by_uint8_truncation():
    metaformer = Preprocessing((224, 224), PREP.mean, PREP.std, paper_kind="metaformer")
    rng = np.random.default_rng(3)
    sample = _sample_of(ClickMeRecord(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), np.zeros((256, 256), np.uint8), 0))
    aligned_image, _, _ = clickme_item(sample, metaformer, "aligned")
    paper_image, _, _ = clickme_item(sample, metaformer, "paper")
    step = 1 / 255 / min(PREP.std)
    difference = (aligned_image - paper_image).abs().max().item()
    assert 0 < difference <= step + 1e-5


def test_timm_paper_transform_for_a_non_224_model():
    timm_192 = Preprocessing((192, 192), PREP.mean, PREP.std, interpolation="bilinear", crop_pct=0.9)
    image, reference, boxes = clickme_item(_band_sample(), timm_192, "paper")
    assert image.shape == (3, 192, 192) and reference.shape == (192, 192)
    # timm: resize floor(192 / 0.9) = 213, crop offset round((213 - 192) / 2) = 10 (Python rounds half to even)
    scale = 213 / 256
    # coordinates ≤ 192 after a float32 scale and offset: float32_bound(2, 192) ≈ 9e-5 (was 1e-4)
    assert boxes[0].tolist() == pytest.approx([32 * scale - 10, 0.0, 64 * scale - 10, 192.0], abs=float32_bound(2, 192.0))


def _sample_of(record: ClickMeRecord):
    from alignbench.datasets import ClickMeSample

    return ClickMeSample(np.asarray(record.image), np.asarray(record.heatmap, dtype=np.float32), record.label, np.zeros((0, 4), np.float32))


# --- download -------------------------------------------------------------------------------------


class _RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (http.server has none) and logs the ranges asked for."""

    def do_GET(self) -> None:  # noqa: N802
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        requested = self.headers.get("Range")
        start = int(requested.split("=")[1].split("-")[0]) if requested else 0
        self.server.requests.append((path.name, start))  # type: ignore[attr-defined]
        if start >= len(data) and requested:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if requested else 200)
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def shard_server(tmp_path):
    served = tmp_path / "served"
    _shards(served, [1] * len(CLICKME_VAL_SHARDS))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(served)))
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/", server.requests  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_download_into_cache_then_offline(shard_server, isolated_cache, monkeypatch):
    served, url, requests = shard_server
    monkeypatch.setenv("ALIGNBENCH_CLICKME_URL", url)
    dataset = open_dataset("clickme-val")
    assert len(dataset) == 17 and dataset.image_ids()[16] == "val-16:0"
    for name in CLICKME_VAL_SHARDS:
        assert (isolated_cache / "clickme" / "val" / name).read_bytes() == (served / name).read_bytes()
    assert sorted(requests) == sorted((name, 0) for name in CLICKME_VAL_SHARDS)
    assert open_dataset("clickme-val", download=False).fingerprint == dataset.fingerprint
    assert len(requests) == 17  # the second open fetched nothing
    assert dataset.fingerprint == open_dataset("clickme-val", served).fingerprint  # same content, same id


def test_download_resumes_a_partial_file(shard_server, isolated_cache, monkeypatch):
    served, url, requests = shard_server
    monkeypatch.setenv("ALIGNBENCH_CLICKME_URL", url)
    destination = isolated_cache / "clickme" / "val"
    destination.mkdir(parents=True)
    full = (served / "val-3.tfrecords").read_bytes()
    (destination / "val-3.tfrecords.part").write_bytes(full[:1000])
    open_dataset("clickme-val")
    assert ("val-3.tfrecords", 1000) in requests  # a Range request from where the .part ended
    assert (destination / "val-3.tfrecords").read_bytes() == full
    assert not (destination / "val-3.tfrecords.part").exists()


def test_download_failure_names_the_url(isolated_cache, monkeypatch):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ALIGNBENCH_CLICKME_URL", f"http://127.0.0.1:{port}/val/")
    with pytest.raises(DatasetError, match=rf"could not download http://127\.0\.0\.1:{port}/val/val-0\.tfrecords: .*--data-dir"):
        open_dataset("clickme-val")
    with pytest.raises(DatasetError, match=r"missing from .*val-0\.tfrecords.*--data-dir"):
        open_dataset("clickme-val", download=False)


def test_math_of_paper_geometry_is_torchvision_semantics():
    # torchvision CenterCrop: int(round((256 - 224) / 2)) = 16; ConvNeXt resize: int(224 / (224/256)) = 256
    from alignbench.datasets._pipeline import paper_geometry

    convnext = Preprocessing((224, 224), PREP.mean, PREP.std, paper_kind="convnext")
    assert paper_geometry(convnext) == ((256, 256), (16, 16), "bicubic")
    timm = Preprocessing((224, 224), PREP.mean, PREP.std, interpolation="bicubic", crop_pct=0.95)
    assert paper_geometry(timm) == ((math.floor(224 / 0.95),) * 2, (round((235 - 224) / 2),) * 2, "bicubic")


@pytest.mark.parametrize(
    "preprocessing",
    [
        Preprocessing((224, 224), PREP.mean, PREP.std, paper_kind="convnext"),
        Preprocessing((224, 224), PREP.mean, PREP.std, paper_kind="metaformer"),
        Preprocessing((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.875),
        Preprocessing((192, 192), PREP.mean, PREP.std, interpolation="bilinear", crop_pct=0.9),
    ],
    ids=["convnext", "metaformer", "timm-0.875", "timm-192"],
)
def test_paper_image_is_the_published_torchvision_transform(preprocessing):
    """What utils.evaluate_clickme does: uint8 truncation, PIL image, the model's transform."""
    from PIL import Image
    from timm.data import create_transform
    from torchvision import transforms

    from alignbench.datasets._pipeline import paper_image

    rng = np.random.default_rng(7)
    image_224 = torch.from_numpy(rng.uniform(0, 255, size=(224, 224, 3)).astype(np.float32))
    pil = Image.fromarray(image_224.numpy().astype(np.uint8))
    if preprocessing.paper_kind == "timm":  # timm's eval transform, as the published code builds it
        published = create_transform(
            input_size=(3, *preprocessing.input_size),
            interpolation=preprocessing.interpolation,
            mean=preprocessing.mean,
            std=preprocessing.std,
            crop_pct=preprocessing.crop_pct,
        )
    else:  # get_model.py: Resize(int(224 / crop_pct), BICUBIC) + CenterCrop(224)
        size = 256 if preprocessing.paper_kind == "convnext" else 224
        published = transforms.Compose(
            [
                transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(mean=preprocessing.mean, std=preprocessing.std),
            ]
        )
    assert torch.equal(paper_image(image_224, preprocessing), published(pil))


TF_DECODE = Path(__file__).resolve().parents[1] / "data" / "tf_decode"


@pytest.mark.parametrize("name", ["tf_rgb_q95_420", "pil_rgb_q75_444", "tf_gray_q95"])
def test_jpegs_decode_to_tensorflows_pixels(name):
    # tf.io.decode_jpeg's output for these files was saved by TensorFlow 2.21 (make_fixture.py there):
    # ClickMe records are decoded byte for byte as the TF pipeline decodes them.
    from PIL import Image

    from alignbench.datasets._clickme import decode_jpeg

    data = (TF_DECODE / f"{name}.jpg").read_bytes()
    expected = np.load(TF_DECODE / f"{name}.tf_decoded.npy")
    decoded = decode_jpeg(data, TF_DECODE / f"{name}.jpg", 0)
    assert decoded.dtype == np.uint8 and decoded.shape == expected.shape
    assert np.array_equal(decoded, expected)
    if name != "pil_rgb_q75_444":  # at quality 95 PIL's accurate IDCT gives other pixels: the test can tell
        pil = np.asarray(Image.open(TF_DECODE / f"{name}.jpg")).reshape(expected.shape)
        assert not np.array_equal(pil, expected)


def _jpeg_bytes(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "image, heatmap, problem",
    [
        (lambda good: good[: len(good) // 2], None, "a JPEG does not decode (Premature end of JPEG file)"),
        (lambda good: _jpeg_bytes(np.zeros((128, 128, 3), np.uint8)), None, "image 128×128, heatmap 256×256"),
        (None, lambda good: _jpeg_bytes(np.zeros((256, 256, 3), np.uint8)), "the heatmap JPEG has colour channels"),
    ],
)
def test_records_whose_jpegs_are_not_clickme_are_named(tmp_path, isolated_cache, image, heatmap, problem):
    good_image = _jpeg_bytes(np.full((256, 256, 3), 100, np.uint8))
    good_heatmap = _jpeg_bytes(np.full((256, 256), 50, np.uint8))
    record = ClickMeRecord(image(good_image) if image else good_image, heatmap(good_heatmap) if heatmap else good_heatmap, 3)
    data = tmp_path / "shards"
    data.mkdir()
    write_clickme_shard(data / "val-0.tfrecords", [ClickMeRecord(good_image, good_heatmap, 1), record])
    reader = open_dataset("clickme-val", data).reader()
    assert reader.read(0).image.shape == (256, 256, 3)
    with pytest.raises(DatasetError) as caught:
        reader.read(1)
    message = caught.value.message
    assert "val-0.tfrecords" in message and "at the record at byte" in message and problem in message, message

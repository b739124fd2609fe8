"""ClickMe validation shards: download, index, read and write, without TensorFlow (torch-free).

Layout (Harmonization, ``harmonization/common/clickme_dataset.py``): each record is a tf.train.Example
with ``image`` (JPEG, 256×256×3), ``heatmap`` (JPEG, 256×256×1, the human click map) and ``label``
(int64, ImageNet-1k index). The official validation set is 17 shards ``val-{i}.tfrecords``.

Opening indexes every shard once: one sequential pass that hashes the file, checks every record's
CRCs and notes each record's byte offset and label. The index is cached under the shard's sha256
(and the sha256 under the file's size and mtime), so re-opening reads no shard at all, and a worker
seeks straight to the records it serves: memory stays flat, a shard is never held in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from alignbench._utils.cache import cache_dir, sha256_text
from alignbench._utils.download import BrokenOff, Incomplete, Unreachable, download, download_progress, part_path
from alignbench._utils.file_hashes import cached_sha256, known_sha256
from alignbench.datasets import _tfrecord as tfrecord
from alignbench.datasets._base import CLICKME_SIDE, ClickMeSample, Dataset, DatasetSpec, Reader, listing
from alignbench.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover - numpy is imported only where images are decoded
    import numpy as np

# Where Harmonization's load_clickme_val fetches the shards (CLICKME_BASE_URL + "/val/", NB_VAL_SHARDS = 17).
CLICKME_VAL_URL = "https://storage.googleapis.com/serrelab/prj_harmonization/dataset/click-me/val/"
CLICKME_VAL_SHARDS = tuple(f"val-{i}.tfrecords" for i in range(17))
CLICKME_URL_ENV = "ALIGNBENCH_CLICKME_URL"  # a mirror (or a test server) instead of CLICKME_VAL_URL
_FEATURES = ("image", "heatmap", "label")
_INDEX_VERSION = "1"


@dataclass(frozen=True)
class ClickMeRecord:
    """One ClickMe record: JPEG bytes, or uint8 arrays that the writer encodes as JPEG."""

    image: bytes | np.ndarray  # 256×256×3
    heatmap: bytes | np.ndarray  # 256×256 (or 256×256×1)
    label: int


def _jpeg(array: np.ndarray, quality: int) -> bytes:
    import numpy as np
    from PIL import Image

    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        raise TypeError(f"ClickMe arrays are uint8, got {array.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_clickme_record(record: ClickMeRecord | tuple, *, quality: int = 95) -> bytes:
    """A serialised tf.train.Example in the ClickMe layout."""
    image, heatmap, label = (record.image, record.heatmap, record.label) if isinstance(record, ClickMeRecord) else record
    return tfrecord.encode_example(
        {
            "image": image if isinstance(image, bytes) else _jpeg(image, quality),
            "heatmap": heatmap if isinstance(heatmap, bytes) else _jpeg(heatmap, quality),
            "label": int(label),
        }
    )


def write_clickme_shard(path: str | os.PathLike[str], records: Iterable[ClickMeRecord | tuple], *, quality: int = 95) -> int:
    """Write a ClickMe-format TFRecord shard; returns the number of records.

    ``records`` are ClickMeRecord or (image, heatmap, label) tuples; arrays are JPEG-encoded at
    ``quality``, bytes are taken as JPEG already.
    """
    return tfrecord.write_records(path, (encode_clickme_record(r, quality=quality) for r in records))


def iter_clickme_shard(path: str | os.PathLike[str]) -> Iterator[tuple[int, ClickMeRecord]]:
    """(byte offset, record with JPEG bytes) of every record of a shard, CRCs checked."""
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            for offset, payload in tfrecord.iter_records(handle):
                yield offset, _record_of(path, offset, payload)
        except tfrecord.RecordError as error:
            raise _corrupt(path, error.offset, error.problem) from None


def _corrupt(path: Path, offset: int, problem: str) -> DatasetError:
    return DatasetError(
        f"ClickMe shard {path} is unreadable at the record at byte {offset}: {problem}; replace the file "
        "(a downloaded shard: delete it to fetch it again)"
    )


def _record_of(path: Path, offset: int, payload: bytes) -> ClickMeRecord:
    try:
        features = tfrecord.parse_example(payload)
    except (ValueError, UnicodeDecodeError) as error:
        raise _corrupt(path, offset, f"not a tf.train.Example ({error})") from None
    missing = [name for name in _FEATURES if not features.get(name)]
    if missing:
        raise _corrupt(path, offset, f"no {' / '.join(missing)} feature (a ClickMe record has image, heatmap, label)")
    image, heatmap, label = (features[name][0] for name in _FEATURES)
    if not isinstance(image, bytes) or not isinstance(heatmap, bytes) or not isinstance(label, int):
        raise _corrupt(path, offset, "image and heatmap must be bytes features, label an int64 feature")
    return ClickMeRecord(image, heatmap, label)


# --- index ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardIndex:
    sha256: str
    offsets: list[int]  # byte offset of each record's header
    labels: list[int]


class _HashingReader:
    """A binary file that hashes every byte read through it (one pass: index and digest)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data

    def tell(self) -> int:
        return self._handle.tell()


def _scan_shard(path: Path) -> ShardIndex:
    offsets: list[int] = []
    labels: list[int] = []
    with open(path, "rb", buffering=1 << 20) as raw:
        handle = _HashingReader(raw)
        try:
            for offset, payload in tfrecord.iter_records(handle):  # type: ignore[arg-type]
                offsets.append(offset)
                labels.append(_record_of(path, offset, payload).label)
        except tfrecord.RecordError as error:
            raise _corrupt(path, error.offset, error.problem) from None
    if not offsets:
        raise DatasetError(f"ClickMe shard {path} holds no record; replace the file")
    return ShardIndex(handle.digest.hexdigest(), offsets, labels)


def _index_path(sha256: str) -> Path:
    return cache_dir("clickme", "index") / f"{sha256}.json"


def _load_index(sha256: str) -> ShardIndex | None:
    try:
        with open(_index_path(sha256), encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("version") == _INDEX_VERSION and len(data["offsets"]) == len(data["labels"]):
            return ShardIndex(sha256, list(data["offsets"]), list(data["labels"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _save_index(index: ShardIndex) -> None:
    path = _index_path(index.sha256)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".index-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"version": _INDEX_VERSION, "offsets": index.offsets, "labels": index.labels}, handle)
    os.replace(temporary, path)


def shard_indexes(paths: list[Path]) -> list[ShardIndex]:
    """Each shard's record offsets and labels: from the cache, or by one checked pass over the file
    that also hashes it (a progress bar on stderr when there is much to read)."""
    indexes: dict[Path, ShardIndex] = {}
    for path, sha256 in zip(paths, known_sha256(paths)):
        if sha256 is not None and (index := _load_index(sha256)) is not None:
            indexes[path] = index
    unread = [path for path in paths if path not in indexes]

    def scan(path: Path) -> str:
        indexes[path] = _scan_shard(path)
        _save_index(indexes[path])
        return indexes[path].sha256

    if unread:
        cached_sha256(unread, compute=scan, what="indexing ClickMe shards")
    for path in unread:
        if path not in indexes:  # digest known but its index was deleted: read the shard again
            scan(path)
    return [indexes[path] for path in paths]


# --- dataset --------------------------------------------------------------------------------------


def _natural_key(path: Path) -> list[Any]:
    """val-2 before val-10: name order as a person reads it."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _shard_paths(spec: DatasetSpec, data_dir: Path | None, download: bool) -> list[Path]:
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise DatasetError(f"--data-dir {data_dir} is not a directory; it should hold ClickMe *.tfrecords shards")
        shards = sorted(data_dir.glob("*.tfrecords"), key=_natural_key)
        if not shards:
            raise DatasetError(
                f"no *.tfrecords file in {data_dir}; pass the directory holding the ClickMe shards "
                "(val-0.tfrecords … val-16.tfrecords), or omit --data-dir to download them"
            )
        return shards
    destination = cache_dir("clickme", "val")
    missing = [name for name in CLICKME_VAL_SHARDS if not (destination / name).exists()]
    if missing and not download:
        raise DatasetError(
            f"ClickMe val shards missing from {destination}: {listing(missing)}; allow the download or "
            "pass --data-dir DIR holding the shards"
        )
    base_url = os.environ.get(CLICKME_URL_ENV) or CLICKME_VAL_URL
    return download_files(
        base_url,
        CLICKME_VAL_SHARDS,
        destination,
        hint="pass --data-dir DIR holding the ClickMe val shards (val-0.tfrecords … val-16.tfrecords)",
    )


class ClickMeReader(Reader):
    geometry = "clickme"
    reference_origin = "its ClickMe record"

    def __init__(self, shards: list[Path], shard_of: list[int], offsets: list[int]) -> None:
        self.shards = shards
        self.shard_of = shard_of
        self.offsets = offsets
        self._handles: dict[int, BinaryIO] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:  # open files stay in the process that opened them
        return {**self.__dict__, "_handles": {}}

    def __del__(self) -> None:
        for handle in self._handles.values():
            handle.close()

    def _handle(self, shard: int) -> BinaryIO:
        if self._pid != os.getpid():
            # A forked DataLoader worker: its inherited files share their read offsets with the
            # parent's and its siblings', so seek-then-read would race. Open its own.
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            if len(self._handles) >= 4:  # a worker moves through the shards in order
                self._handles.pop(next(iter(self._handles))).close()
            self._handles[shard] = open(self.shards[shard], "rb")
        return self._handles[shard]

    def read(self, index: int) -> ClickMeSample:
        import numpy as np

        path, offset = self.shards[self.shard_of[index]], self.offsets[index]
        try:
            payload = tfrecord.read_record_at(self._handle(self.shard_of[index]), offset)
        except tfrecord.RecordError as error:
            raise _corrupt(path, error.offset, error.problem) from None
        record = _record_of(path, offset, payload)
        image, heatmap = decode_jpeg(record.image, path, offset), decode_jpeg(record.heatmap, path, offset)
        if image.shape[:2] != (CLICKME_SIDE, CLICKME_SIDE) or heatmap.shape[:2] != (CLICKME_SIDE, CLICKME_SIDE):
            raise _corrupt(
                path,
                offset,
                f"image {image.shape[1]}×{image.shape[0]}, heatmap {heatmap.shape[1]}×{heatmap.shape[0]}; "
                "ClickMe records hold 256×256 images and heatmaps",
            )
        # TF reshapes the decoded heatmap to (256, 256, 1): a colour heatmap JPEG is not a ClickMe record.
        if heatmap.shape[2] != 1:
            raise _corrupt(path, offset, "the heatmap JPEG has colour channels; ClickMe heatmaps are grayscale")
        if image.shape[2] == 1:  # a grayscale photo: its grey in each channel
            image = np.repeat(image, 3, axis=2)
        return ClickMeSample(
            image=np.ascontiguousarray(image),
            heatmap=heatmap[:, :, 0].astype(np.float32),
            label=record.label,
            boxes=np.zeros((0, 4), dtype=np.float32),
        )


def decode_jpeg(data: bytes, path: Path, offset: int) -> np.ndarray:
    """uint8 [H, W, C] (C = 1 for a grayscale JPEG, else 3) exactly as ``tf.io.decode_jpeg`` decodes it.

    TF's default is libjpeg-turbo's fast integer IDCT with fancy upsampling; simplejpeg's
    ``fastdct=True`` runs the same libjpeg-turbo code, and gave the same bytes as TensorFlow 2.21 on
    every pixel of 64 real images in seven encodings (scripts/check_clickme_against_tensorflow.py;
    tests/data/tf_decode holds TF's output for three small JPEGs). PIL's accurate IDCT differs from
    it by up to 20 grey levels at quality 95, which moved Spearman's ρ by up to 0.005 (mean 0.001)
    against the same maps.
    """
    import simplejpeg

    try:
        _, _, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        channels = "GRAY" if colorspace == "Gray" else "RGB"
        return simplejpeg.decode_jpeg(data, colorspace=channels, fastdct=True, fastupsample=False)
    except (ValueError, RuntimeError) as error:
        raise _corrupt(path, offset, f"a JPEG does not decode ({error})") from None


class ClickMeDataset(Dataset):
    def __init__(self, spec: DatasetSpec, shards: list[Path], indexes: list[ShardIndex], location: Path) -> None:
        # the stem once per shard: pathlib's .stem per record was a third of opening the 52,224-image set
        image_ids = [f"{stem}:{i}" for stem, index in zip((s.stem for s in shards), indexes) for i in range(len(index.offsets))]
        fingerprint = sha256_text("clickme-v2", *(f"{s.name}={i.sha256}" for s, i in zip(shards, indexes)))
        super().__init__(spec, fingerprint=fingerprint, image_ids=image_ids, location=location)
        self.shards = shards
        self._indexes = indexes

    def labels(self) -> list[int]:
        return [label for index in self._indexes for label in index.labels]

    def reader(self) -> ClickMeReader:
        shard_of = [k for k, index in enumerate(self._indexes) for _ in index.offsets]
        offsets = [offset for index in self._indexes for offset in index.offsets]
        return ClickMeReader(self.shards, shard_of, offsets)


def open_clickme(spec: DatasetSpec, data_dir: Path | None, download: bool) -> ClickMeDataset:
    shards = _shard_paths(spec, data_dir, download)
    indexes = shard_indexes(shards)
    location = Path(data_dir).expanduser() if data_dir is not None else shards[0].parent
    return ClickMeDataset(spec, shards, indexes, location)


_TIMEOUT_SECONDS = 60


def download_files(base_url: str, names: Sequence[str], destination: Path, *, hint: str) -> list[Path]:
    """Fetch ``base_url/<name>`` for each name not yet in ``destination`` (resumable, see
    ``alignbench._utils.download``); returns every path. ``hint`` ends each error message: what to do
    without the network (e.g. pass --data-dir). Every failure is a DatasetError naming the URL."""
    destination.mkdir(parents=True, exist_ok=True)
    targets = [destination / name for name in names]
    missing = [target for target in targets if not target.exists()]
    if missing:
        with download_progress() as progress:
            for target in missing:
                url = f"{base_url.rstrip('/')}/{target.name}"
                try:
                    download(url, target, progress=progress, description=f"[bold]download[/] {target.name}", timeout=_TIMEOUT_SECONDS)
                except Unreachable as error:
                    reason = f"HTTP {error.status} {error.http_reason}" if error.status else error.reason
                    raise DatasetError(f"could not download {url}: {reason}; {hint}") from None
                except Incomplete as error:
                    raise DatasetError(f"download of {url} {error}; run again to resume, or {hint}") from None
                except BrokenOff as error:
                    raise DatasetError(
                        f"download of {url} was interrupted ({error.error}); run again to resume from {part_path(target)}, or {hint}"
                    ) from None
    return targets

"""The torch view of a dataset: ``torch_dataset(dataset, ...)``, a map-style Dataset of model inputs and
reference maps; ``collate``, which batches its items; ``data_loader(dataset, ...)``, the batches decoded in
worker processes. The opened ``Dataset`` (``_base``) stays torch-free; these functions take it.

Item (one image), a dict:

- ``index``: int, the image's position in ``Dataset.image_ids()``;
- ``image_id``: str;
- ``image``: float32 [3, H, W], normalised model input (H, W = preprocessing.input_size);
- ``reference``: float32 [H, W], the reference map at the model input size (all NaN when the dataset
  has none: ``Dataset.has_reference``);
- ``reference_undefined``: None, or why the reference map makes a metric that reads it undefined
  (constant in its file or record, or up to rounding after preprocessing: alignbench.metrics.constancy;
  or ``NO_REFERENCE``);
- ``reference_ranks``: float32 [H·W], average ranks of ``reference`` (NaN row if it is non-finite);
  present when asked for and the dataset has reference maps;
- ``label``: int, the class index, -1 when unknown (the scorer then uses the top-1 prediction);
- ``boxes``: float32 [K, 4], (x0, y0, x1, y1) in model-input pixels, continuous edges, x1/y1
  exclusive (alignbench.metrics.localisation's convention); K may be 0.

Items of an eye-tracking dataset (``Dataset.has_fixations``; the ``reference`` is then the fixation
density resized to the model input with antialiasing) also carry, at the image file's own size:

- ``stimulus_size``: (height, width);
- ``fixations``: float64 numpy [N, 2], (x, y) = (column, row), 0-based continuous pixels (the pixel of
  x is floor(x)); N may be 0 (then ``reference_undefined`` says the image has no fixations);
- ``density``: float32 numpy [h, w], the fixation density (sums to 1; all NaN when N = 0);
- ``baseline``: float32 numpy [h, w], the centre bias: leave-one-out average fixation density of the
  other images (sums to 1);
- ``other_fixations``: float64 numpy [M, 2], every other image's fixations rescaled to this size.

``collate`` passes these five through as lists (one entry per image), and stacks the rest; ``boxes`` becomes [B, K_max, 4] padded with NaN, with ``box_counts`` int64
[B] saying how many rows are real; ``index`` and ``label`` become int64 [B]; ``image_id`` and
``reference_undefined`` lists;
``image`` [B, 3, H, W] is stored channels-last (NHWC in memory), the layout the scorer runs its
models in, so the copy into it happens in the worker rather than in the main loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from alignbench._utils.threads import one_torch_thread
from alignbench.datasets._base import NO_REFERENCE, Dataset
from alignbench.datasets._pipeline import clickme_item, fixation_item, folder_item, reference_recipe
from alignbench.datasets._reference_ranks import ReferenceRankCache
from alignbench.errors import DatasetError
from alignbench.metrics.constancy import CONSTANT_RTOL, constant_map_reason, relative_range
from alignbench.models.preprocessing import Preprocessing

# The keys an eye-tracking dataset's items add (module docstring); collate keeps them as lists.
FIXATION_KEYS = ("stimulus_size", "fixations", "density", "baseline", "other_fixations")
NO_FIXATIONS = "the image has no fixations"


class ReferenceMapDataset(TorchDataset):
    """Serves ``positions`` (dataset indices) of one dataset under one preprocessing and protocol."""

    def __init__(
        self,
        dataset: Dataset,
        preprocessing: Preprocessing,
        protocol: str,
        positions: list[int],
        *,
        reference_ranks: bool = True,
    ) -> None:
        # Only picklable, torch-free parts are kept: workers receive a copy of this object.
        self.reader = dataset.reader()
        self.image_ids = dataset.image_ids()
        self.preprocessing = preprocessing
        self.protocol = protocol
        self.positions = positions
        self.rank_cache = (
            ReferenceRankCache(
                dataset.fingerprint,
                reference_recipe(self.reader.geometry, preprocessing, protocol),
                len(dataset),
                tuple(preprocessing.input_size),
            )
            if reference_ranks and dataset.has_reference
            else None
        )

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> dict[str, Any]:
        with one_torch_thread():  # the same bits in a worker and in the main process (see _threads)
            return self._item(self.positions[k])

    def _item(self, index: int) -> dict[str, Any]:
        sample = self.reader.read(index)
        if self.reader.geometry == "clickme":
            image, reference, boxes = clickme_item(sample, self.preprocessing, self.protocol)
        elif self.reader.geometry == "fixations":
            image, reference, boxes = fixation_item(sample, self.preprocessing)
        else:
            image, reference, boxes = folder_item(sample, self.preprocessing)
        item = {
            "index": index,
            "image_id": self.image_ids[index],
            "image": image,
            "reference": reference,
            "reference_undefined": self._reference_undefined(sample.heatmap, reference),
            "label": int(sample.label),
            "boxes": boxes,
        }
        if self.reader.geometry == "fixations":
            item["stimulus_size"] = tuple(sample.image.shape[:2])
            item["fixations"] = sample.fixations
            item["density"] = sample.density
            item["baseline"] = sample.baseline
            item["other_fixations"] = sample.other_fixations
            if len(sample.fixations) == 0:
                item["reference_undefined"] = NO_FIXATIONS
        if self.rank_cache is not None:
            item["reference_ranks"] = self.rank_cache.ranks(index, reference)
        return item

    def _reference_undefined(self, heatmap: Any, reference: torch.Tensor) -> str | None:
        """Why the reference map makes the metrics that read it undefined, or None: constant in the data
        as given (even if preprocessing made it vary), or constant up to rounding after preprocessing."""
        if heatmap is None:
            return NO_REFERENCE
        if float(relative_range(torch.from_numpy(heatmap)[None])) <= CONSTANT_RTOL:  # False for NaN
            return f"the reference map is constant in {self.reader.reference_origin}"
        return constant_map_reason(reference[None], "the reference map")[0]


def _stack_channels_last(images: list[torch.Tensor]) -> torch.Tensor:
    channels, height, width = images[0].shape
    batch = torch.empty((len(images), height, width, channels), dtype=images[0].dtype).permute(0, 3, 1, 2)
    for row, image in enumerate(images):
        batch[row].copy_(image)
    return batch


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    if not items:
        raise ValueError("collate needs at least one item")
    max_boxes = max(item["boxes"].shape[0] for item in items)
    boxes = torch.full((len(items), max_boxes, 4), float("nan"), dtype=torch.float32)
    for row, item in enumerate(items):
        boxes[row, : item["boxes"].shape[0]] = item["boxes"]
    batch: dict[str, Any] = {
        "index": torch.tensor([item["index"] for item in items], dtype=torch.int64),
        "image_id": [item["image_id"] for item in items],
        "image": _stack_channels_last([item["image"] for item in items]),
        "reference": torch.stack([item["reference"] for item in items]),
        "reference_undefined": [item["reference_undefined"] for item in items],
        "label": torch.tensor([item["label"] for item in items], dtype=torch.int64),
        "boxes": boxes,
        "box_counts": torch.tensor([item["boxes"].shape[0] for item in items], dtype=torch.int64),
    }
    for key in FIXATION_KEYS:  # eye-tracking data: per image, sizes differ, so lists (never stacked)
        if all(key in item for item in items):
            batch[key] = [item[key] for item in items]
    if all("reference_ranks" in item for item in items):
        batch["reference_ranks"] = torch.stack([item["reference_ranks"] for item in items])
    return batch


def worker_error_message(error: DatasetError) -> str:
    """The original one-line message of a DatasetError that torch re-raised from a worker.

    torch wraps it as "Caught DatasetError in DataLoader worker process 0.\\nOriginal Traceback …
    \\nalignbench.errors.DatasetError: <message>"; the last line holds the message.
    """
    text = error.message
    if "DataLoader worker" not in text:
        return text
    marker = "DatasetError: "
    last = text.rstrip().splitlines()[-1]
    return last.split(marker, 1)[1] if marker in last else last


class _Batches:
    """A DataLoader whose worker DatasetErrors keep their one-line message."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.dataset = loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return _BatchIterator(iter(self.loader))


class _BatchIterator:
    """Batches from a DataLoader iterator. Made eagerly: the workers start, and start decoding,
    when ``iter()`` is called, so a caller can overlap them with other work (the scorer loads its
    model meanwhile)."""

    def __init__(self, iterator: Iterator[dict[str, Any]]) -> None:
        self.iterator: Iterator[dict[str, Any]] | None = iterator

    def __iter__(self) -> _BatchIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.iterator is None:
            raise StopIteration
        message = None
        try:
            return next(self.iterator)
        except StopIteration:
            self.close()
            raise
        except DatasetError as error:
            message = worker_error_message(error)
        # Raised outside the except block, with the iterator dropped: nothing (no exception
        # context, no traceback) keeps the workers alive, so they shut down now.
        self.close()
        raise DatasetError(message)

    def close(self) -> None:
        """Stop the workers now (dropping the last reference to the DataLoader iterator does)."""
        self.iterator = None


def torch_dataset(
    dataset: Dataset,
    preprocessing: Preprocessing,
    protocol: str = "aligned",
    *,
    skip_ids: Iterable[str] = frozenset(),
    limit: int | None = None,
    reference_ranks: bool = True,
    num_classes: int | None = None,
    positions: Sequence[int] | None = None,
) -> ReferenceMapDataset:
    """A map-style ``torch.utils.data.Dataset`` of ``dataset``'s model inputs and reference maps.

    Items are dicts (see the module docstring); batch them with :func:`collate`. Works with DataLoader
    workers: each item reads only its own record or files, so memory stays flat. ``reference_ranks``
    adds each reference map's average ranks, read from (or computed once into) the reference-rank
    cache. ``num_classes`` checks every label first. ``positions``: exactly these dataset indices (one
    rank's share of a run), instead of ``skip_ids`` and ``limit``.
    """
    dataset.check_protocol(protocol)
    if num_classes is not None:
        dataset.check_labels(num_classes)
    return ReferenceMapDataset(
        dataset,
        preprocessing,
        protocol,
        dataset.positions(skip_ids=skip_ids, limit=limit) if positions is None else list(positions),
        reference_ranks=reference_ranks,
    )


def data_loader(
    dataset: Dataset,
    preprocessing: Preprocessing,
    protocol: str = "aligned",
    *,
    batch_size: int = 16,
    num_workers: int | None = None,
    skip_ids: Iterable[str] = frozenset(),
    limit: int | None = None,
    reference_ranks: bool = True,
    num_classes: int | None = None,
    pin_memory: bool = False,
    positions: Sequence[int] | None = None,
) -> _Batches:
    """Batches of :func:`torch_dataset`, decoded in worker processes (default: cores − 1, at most 4).
    A DatasetError raised in a worker is re-raised here with its own one-line message."""
    items = torch_dataset(
        dataset,
        preprocessing,
        protocol,
        skip_ids=skip_ids,
        limit=limit,
        reference_ranks=reference_ranks,
        num_classes=num_classes,
        positions=positions,
    )
    if num_workers is None:
        num_workers = max(1, min(4, (os.cpu_count() or 2) - 1))
    return make_loader(items, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)


def make_loader(dataset: ReferenceMapDataset, *, batch_size: int, num_workers: int, pin_memory: bool = False) -> _Batches:
    return _Batches(
        DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            persistent_workers=False,
            # a couple of batches in flight per worker: enough to overlap with the model, memory stays flat
            prefetch_factor=2 if num_workers > 0 else None,
        )
    )

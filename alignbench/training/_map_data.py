"""Training data with human maps (``--dataset NAME [--data-dir DIR]``, for ``--harmonize``).

The images and their reference maps are read by the one reader every command uses,
``alignbench.datasets`` (``open_dataset`` and its torch items: the image at the model input and the
reference map resized with it — a folder's heatmap, a ClickMe record's clicks, a fixation dataset's
fixation density). ``--data`` stays the way to give labelled images alone to the methods that need
nothing else; a dataset with reference maps is given the way ``score`` takes it.

Augmentation (``--aug``) is a horizontal flip of the image and its map together, seeded by (seed,
epoch, index) as ``TrainingImages`` seeds its own: no crop or colour change, so the map stays the
human map of the pixels the model sees. An image whose map is missing or constant (``reference_undefined``)
trains with ``has_map`` 0: its pyramid term is multiplied by 0, as Harmonization's ``tokens``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset

from alignbench.datasets import DATASETS, Dataset, open_dataset, torch_dataset
from alignbench.errors import TrainingError
from alignbench.models.preprocessing import Preprocessing
from alignbench.training._data import sample_seed, seeded


@dataclass(frozen=True)
class MapImages:
    """A dataset with reference maps as training data (the interface of ``LabelledImages`` that training reads)."""

    dataset: Dataset

    @property
    def root(self) -> Path | None:
        return self.dataset.location

    @property
    def layout(self) -> str:
        return self.dataset.name

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(self.dataset.labels())

    def __len__(self) -> int:
        return len(self.dataset)

    def fingerprint(self) -> str:
        return self.dataset.fingerprint

    def check_labels(self, num_classes: int, model: str, option: str, *, teacher: bool = False) -> None:
        """Labels inside the model's classes; without a teacher, every image needs one (the cross-entropy)."""
        self.dataset.check_labels(num_classes)
        if teacher:
            return
        unlabelled = sum(label < 0 for label in self.labels)
        if unlabelled:
            raise TrainingError(
                f"--dataset {self.dataset.name}: {unlabelled} of {len(self)} images have no label; train on the model's own "
                "predictions with --distill-from self (the frozen parent as teacher), or give labels"
            )

    def source(self) -> dict[str, Any]:
        """Where the human maps came from, as the lineage records it."""
        return {
            "dataset": self.dataset.name,
            "location": None if self.root is None else str(self.root),
            "fingerprint": self.dataset.fingerprint,
            "reference": self.dataset.spec.reference,
            "images": len(self),
        }


def open_map_data(name: str, data_dir: str | Path | None, fixation_sigma: float | None = None) -> MapImages:
    """The dataset ``name`` (at ``data_dir``; an eye-tracking one's density blurred by ``fixation_sigma`` px)
    as training data; TrainingError unless it has reference maps."""
    dataset = open_dataset(name, data_dir, download=True, fixation_sigma=fixation_sigma)
    if not dataset.has_reference:
        where = f" at {dataset.location}" if dataset.location else ""
        raise TrainingError(
            f"--harmonize trains on human maps, and dataset {name}{where} has no reference maps; use a dataset that has them "
            f"({', '.join(DATASETS)}; folder only with heatmaps/)"
        )
    return MapImages(dataset)


def input_preprocessing(preprocessing: Preprocessing, img_size: int | None) -> Preprocessing:
    return preprocessing if img_size is None else replace(preprocessing, input_size=(img_size, img_size))


class MapTrainingImages(TorchDataset):
    """Item ``(epoch, index)``: ``image``, ``reference`` (the human map at the input size), ``has_map``,
    ``label``, ``index``; with ``flip``, both flipped together with probability ½ (seeded per sample)."""

    def __init__(self, images: MapImages, preprocessing: Preprocessing, *, seed: int, flip: bool) -> None:
        self.items = torch_dataset(images.dataset, preprocessing, "aligned", reference_ranks=False)
        self.seed, self.flip = seed, flip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        item = self.items[index]
        image, reference = item["image"], item["reference"]
        has_map = item["reference_undefined"] is None and bool(torch.isfinite(reference).all())
        if not has_map:
            reference = torch.zeros_like(reference)
        if self.flip:
            with seeded(sample_seed(self.seed, epoch, index)):
                flipped = random.random() < 0.5
            if flipped:
                image, reference = image.flip(-1), reference.flip(-1)
        return {
            "image": image.contiguous(),
            "reference": reference.contiguous(),
            "has_map": float(has_map),
            "label": int(item["label"]),
            "index": index,
        }

"""Training data: labelled image files, their torch Datasets, and an order that resumes exactly.

Layouts read (``--data``, ``--val``):

- an ImageFolder tree: one folder per class (images anywhere below it). Folders named by ImageNet
  wnids take their ImageNet-1k index (= the sorted-wnid order of all 1000, what timm's models
  predict); other names take their rank among the sorted folder names;
- the ``folder`` layout that ``score`` reads: ``images/`` and ``labels.csv`` (``filename,label``, or
  a header naming a ``label`` / ``class_index`` column, as ../shared/data/imagenet-samples-256);
- ``sample``: the ten ImageNet-val images embedded in the package.

Reproducibility: every sample's augmentation (and, for Grad-CAM consistency, its composite's
quadrant and other images) is drawn from a generator seeded by (seed, epoch, index), and the order
is DistributedSampler's permutation of (seed + epoch). So the images of a step do not depend on the
number of DataLoader workers or processes, and a resumed run continues with exactly the batches an
uninterrupted one would have seen.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import DistributedSampler

from alignbench.datasets import IMAGE_SUFFIXES, SAMPLE_DIR, SAMPLE_LABELS, fingerprint_files, read_labels
from alignbench.errors import DatasetError, TrainingError
from alignbench.training._gc_consistency import build_composite
from alignbench.training._request import SAMPLE_DATA

LABELS_FILE = "labels.csv"
_LAYOUT_HINT = "an ImageFolder tree (one folder per class), a folder with images/ and labels.csv, or `sample`"


@dataclass(frozen=True)
class LabelledImages:
    """Image files and their class indices, in a fixed order."""

    root: Path
    files: tuple[Path, ...]
    labels: tuple[int, ...]
    layout: str  # imagefolder | folder | sample
    label_files: tuple[Path, ...] = ()  # files the labels were read from (part of the fingerprint)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.labels)))

    def fingerprint(self) -> str:
        """sha256 of the layout and every file's name and content (digests cached, see datasets)."""
        names = [os.path.relpath(path, self.root).replace(os.sep, "/") for path in (*self.files, *self.label_files)]
        return fingerprint_files(f"train-{self.layout}-v1", self.root, names, what="fingerprinting training data")

    def check_labels(self, num_classes: int, model: str, option: str) -> None:
        bad = [(path, label) for path, label in zip(self.files, self.labels) if not 0 <= label < num_classes]
        if bad:
            path, label = bad[0]
            raise TrainingError(
                f"{option}: {path.name} has label {label}, outside {model}'s {num_classes} classes (0..{num_classes - 1})"
                + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                + "; use ImageNet wnids or class indices the model predicts"
            )


def _images_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _labelled_by_csv(root: Path, image_dir: Path, labels_file: Path, layout: str, option: str) -> LabelledImages:
    files = _images_in(image_dir)
    if not files:
        raise TrainingError(f"{option} {root}: no image in {image_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    by_name = read_labels(labels_file)
    labels, missing, empty = [], [], []
    for path in files:
        label = by_name.get(path.name, by_name.get(path.stem))
        labels.append(-1 if label is None else label)
        if label is None:
            missing.append(path.name)
        elif label < 0:  # an empty label: scoring explains such an image's prediction; training has nothing to learn
            empty.append(path.name)
    if empty:
        raise TrainingError(
            f"{option} {root}: {labels_file.name} leaves the label of {empty[0]} empty"
            + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
            + "; training needs a class index for every image: fill it in, or remove the image"
        )
    if missing:
        raise TrainingError(
            f"{option} {root}: {labels_file.name} has no label for {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; training needs a label for every image"
        )
    return LabelledImages(root, tuple(files), tuple(labels), layout, (labels_file,))


def _imagenet_indices() -> dict[str, int]:
    from timm.data import ImageNetInfo

    return {wnid: index for index, wnid in enumerate(ImageNetInfo().label_names())}


def _image_folder(root: Path, option: str) -> LabelledImages:
    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(
            Path(walk_root) / name
            for walk_root, _, names in os.walk(folder, followlinks=True)
            for name in names
            if Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
        if found:
            classes[folder.name] = found
    if not classes:
        raise TrainingError(f"{option} {root} has no class folder with images; give {_LAYOUT_HINT}")
    imagenet = _imagenet_indices()
    index = (
        {name: imagenet[name] for name in classes}
        if all(name in imagenet for name in classes)
        else {name: position for position, name in enumerate(classes)}
    )
    files = [path for name in classes for path in classes[name]]
    labels = [index[name] for name in classes for _ in classes[name]]
    return LabelledImages(root, tuple(files), tuple(labels), "imagefolder")


def open_training_data(data: str | os.PathLike[str], option: str = "--data") -> LabelledImages:
    """The labelled images of ``data`` (see the module docstring); TrainingError when there are none."""
    if str(data) == SAMPLE_DATA:
        return _labelled_by_csv(SAMPLE_DIR, SAMPLE_DIR, SAMPLE_DIR / SAMPLE_LABELS, "sample", option)
    root = Path(data).expanduser()
    if not root.is_dir():
        raise TrainingError(f"{option} {root} is not a directory; give {_LAYOUT_HINT}")
    root = root.resolve()
    if (root / "images").is_dir():
        labels_file = root / LABELS_FILE
        if not labels_file.is_file():
            raise TrainingError(f"{option} {root} has images/ but no {LABELS_FILE}; training needs a label per image")
        return _labelled_by_csv(root, root / "images", labels_file, "folder", option)
    return _image_folder(root, option)


# ------------------------------------------------------------------------------------ torch side


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python's, numpy's and torch's global generators seeded inside, restored afterwards (timm's and
    torchvision's transforms draw from them)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except OSError as error:
        raise DatasetError(f"cannot read image {path}: {error}") from None


class TrainingImages(TorchDataset):
    """Item ``(epoch, index)``: the augmented image, its label and, with ``composites``, the 2×2 grid of
    Grad-CAM consistency (the same augmented image at a random quadrant, three images of other
    classes, each augmented on its own, as the authors' ``folder_composite.ImageFolder``)."""

    def __init__(self, images: LabelledImages, transform: Callable[[Image.Image], torch.Tensor], *, seed: int, composites: bool) -> None:
        self.images, self.transform, self.seed, self.composites = images, transform, seed, composites
        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(images.labels):
            by_class.setdefault(label, []).append(index)
        self.by_class = by_class
        self.classes = sorted(by_class)
        self.class_position = {label: position for position, label in enumerate(self.classes)}
        if composites and len(self.classes) < 2:
            raise TrainingError("Grad-CAM consistency pastes images of other classes beside each image: --data needs at least 2 classes")

    def __len__(self) -> int:
        return len(self.images)

    def _other_image(self, label: int) -> int:
        # a class other than `label`, uniformly (the authors drop the label's class from the list),
        # then one of its images
        position = random.randrange(len(self.classes) - 1)
        if position >= self.class_position[label]:
            position += 1
        return random.choice(self.by_class[self.classes[position]])

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        label = self.images.labels[index]
        with seeded(sample_seed(self.seed, epoch, index)):
            image = self.transform(load_rgb(self.images.files[index]))
            item: dict[str, Any] = {"image": image, "label": label, "index": index}
            if self.composites:
                quadrant = random.randrange(4)
                others = [self.transform(load_rgb(self.images.files[self._other_image(label)])) for _ in range(3)]
                item["composite"] = build_composite(image, others, quadrant)
                item["quadrant"] = quadrant
        return item


class EvalImages(TorchDataset):
    """Item ``index``: the image under the model's eval transform, and its label."""

    def __init__(self, images: LabelledImages, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.images.files[index])), self.images.labels[index]


class EpochSampler(DistributedSampler):
    """DistributedSampler's order for this process (permutation seeded by seed + epoch, the ranks
    interleaved), yielded as (epoch, index) keys from position ``start`` on (a resumed epoch)."""

    def __init__(self, dataset: TorchDataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start :]
        return iter([(self.epoch, index) for index in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start

"""Datasets of images with reference ("human") maps: the registry and ``open_dataset`` (torch-free).

``open_dataset(name, data_dir)`` lists a dataset's image ids and fingerprints its content without
importing torch or decoding an image, so a cached ``score`` answers from the store in well under a
second. ``torch_dataset(dataset, preprocessing, protocol)`` (imports torch, loaded on first use) yields
model inputs, reference maps, labels and boxes; ``collate`` batches them and ``data_loader(dataset, ...)``
serves the batches from worker processes. See SPEC "Datasets".

Files read: ``sample`` ships in ``alignbench/data/sample``; ``clickme-val`` downloads to
``<cache>/clickme/val`` (``$ALIGNBENCH_CLICKME_URL`` points at a mirror) unless ``data_dir`` holds
the shards; ``folder``, ``imagenet-val``, ``fixations`` and ``nus-scene`` read ``data_dir``;
``scene-sample`` ships in ``alignbench/data/scene-sample``. Derived data (file digests, shard
indexes, reference ranks, fixation densities and centre biases) lives under the cache
(``alignbench._utils.cache.cache_dir``).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from alignbench._utils.file_hashes import fingerprint_files
from alignbench._utils.lazy import lazy_attributes
from alignbench.datasets._base import (
    CLICKME_HUMAN_CEILING,
    NO_REFERENCE,
    PROTOCOLS,
    ClickMeSample,
    Dataset,
    DatasetSpec,
    FolderSample,
)
from alignbench.datasets._clickme import (
    CLICKME_VAL_SHARDS,
    CLICKME_VAL_URL,
    ClickMeRecord,
    iter_clickme_shard,
    open_clickme,
    write_clickme_shard,
)
from alignbench.datasets._fixations import (
    SCENE_SAMPLE_DIR,
    FixationSample,
    open_fixations,
    open_nus_scene,
    read_fixation_points,
    read_nus_fixations,
    remembered_sigmas,
)
from alignbench.datasets._folder import IMAGE_SUFFIXES, open_folder, read_labels
from alignbench.datasets._imagenet import SAMPLE_DIR, SAMPLE_LABELS, open_imagenet_val, open_sample
from alignbench.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.datasets._torch_data import collate, data_loader, torch_dataset

__all__ = [
    "CLICKME_HUMAN_CEILING",
    "CLICKME_VAL_SHARDS",
    "CLICKME_VAL_URL",
    "DATASETS",
    "IMAGE_SUFFIXES",
    "NO_REFERENCE",
    "PROTOCOLS",
    "SAMPLE_DIR",
    "SAMPLE_LABELS",
    "ClickMeRecord",
    "SCENE_SAMPLE_DIR",
    "ClickMeSample",
    "Dataset",
    "DatasetSpec",
    "FixationSample",
    "FolderSample",
    "collate",
    "data_loader",
    "dataset_label",
    "fingerprint_files",
    "iter_clickme_shard",
    "open_dataset",
    "read_fixation_points",
    "read_labels",
    "read_nus_fixations",
    "reopen_dataset",
    "torch_dataset",
    "write_clickme_shard",
]

# public name -> module that defines it (imports torch; loaded on first use)
_LAZY = {
    "torch_dataset": "alignbench.datasets._torch_data",
    "data_loader": "alignbench.datasets._torch_data",
    "collate": "alignbench.datasets._torch_data",
}

_FIXATION_DENSITY = "fixation density (human eye-tracking fixations blurred with a Gaussian of --fixation-sigma px)"
_BOX_MAP = "box mask blurred with the ClickMe blur (derived from ImageNet boxes, not human click data)"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="sample",
            description="10 ImageNet val images embedded in the package, with labels and human-drawn boxes",
            reference=_BOX_MAP,
            needs_data_dir=False,
            has_boxes=True,
            has_labels=True,
            ceiling=None,
            protocols=PROTOCOLS,
            opener=open_sample,
        ),
        DatasetSpec(
            name="clickme-val",
            description="ClickMe validation set: 17 TFRecord shards, downloaded on demand or read from --data-dir",
            reference="human ClickMe click heatmap",
            needs_data_dir=False,
            has_boxes=False,
            has_labels=True,
            ceiling=CLICKME_HUMAN_CEILING,
            protocols=PROTOCOLS,
            opener=open_clickme,
        ),
        DatasetSpec(
            name="folder",
            description="--data-dir with images/, optional heatmaps/ (same stems) and labels.csv (filename,label)",
            reference="the given heatmap",
            needs_data_dir=True,
            has_boxes=False,
            has_labels=False,
            ceiling=None,
            protocols=("aligned",),  # no published pipeline to reproduce: one geometry
            opener=open_folder,
        ),
        DatasetSpec(
            name="imagenet-val",
            description="--data-dir with ImageNet val JPEGs and wsolevaluation box metadata",
            reference=_BOX_MAP,
            needs_data_dir=True,
            has_boxes=True,
            has_labels=True,
            ceiling=None,
            protocols=PROTOCOLS,
            opener=open_imagenet_val,
        ),
        DatasetSpec(
            name="fixations",
            description="--data-dir with images/ and fixations.csv (image,x,y; 0-based pixels) or fixations/NAME.png "
            "(binary fixation-point maps), optional labels.csv",
            reference=_FIXATION_DENSITY,
            needs_data_dir=True,
            has_boxes=False,
            has_labels=False,
            ceiling=None,
            protocols=("aligned",),
            opener=open_fixations,
            has_fixations=True,
        ),
        DatasetSpec(
            name="nus-scene",
            description="--data-dir with the NUS scene eye-tracking set as it ships: stimuli/*.jpg and tidy/fixations.mat",
            reference=_FIXATION_DENSITY,
            needs_data_dir=True,
            has_boxes=False,
            has_labels=False,
            ceiling=None,
            protocols=("aligned",),
            opener=open_nus_scene,
            has_fixations=True,
        ),
        DatasetSpec(
            name="scene-sample",
            description="10 NUS scene images (256×256) embedded in the package, with 12 observers' eye-tracking fixations",
            reference=_FIXATION_DENSITY,
            needs_data_dir=False,
            has_boxes=False,
            has_labels=False,
            ceiling=None,
            protocols=("aligned",),
            opener=open_fixations,
            has_fixations=True,
        ),
    )
}


def open_dataset(
    name: str, data_dir: str | PathLike[str] | None = None, *, download: bool = True, fixation_sigma: float | None = None
) -> Dataset:
    """Open a registered dataset (torch-free). ``download=False`` forbids fetching ClickMe shards.
    ``fixation_sigma``: the Gaussian (pixels of the image) that makes an eye-tracking dataset's
    fixation density; None: 0.03 of each image's longer side. Part of the dataset's fingerprint."""
    spec = DATASETS.get(name)
    if spec is None:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    data_dir = None if data_dir is None else Path(data_dir)
    if spec.has_fixations:
        return spec.opener(spec, data_dir, download, fixation_sigma=fixation_sigma)
    if fixation_sigma is not None:
        with_fixations = ", ".join(n for n, s in DATASETS.items() if s.has_fixations)
        raise DatasetError(f"--fixation-sigma applies to eye-tracking datasets ({with_fixations}), not {name!r}; leave it out")
    return spec.opener(spec, data_dir, download)


def dataset_label(name: str, location: str | None) -> str:
    """A dataset as tables show it: its name and where its files were read (a folder, a shard
    directory), so that two ``folder`` datasets can be told apart; files that ship inside alignbench
    (``sample``) are not located."""
    if not location or Path(location).is_relative_to(_PACKAGE_DIR):
        return name
    return f"{name} ({location})"


_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def reopen_dataset(name: str, location: str | None, fingerprint: str) -> Dataset:
    """The dataset a stored run read, opened again (torch-free, never downloading): from the stored
    ``location`` (the files it was read from), else from where alignbench finds it by itself (the
    embedded sample, the ClickMe cache). DatasetError unless its content is the stored one (same
    fingerprint): maps of other images would not be the run's."""
    reasons = []
    sigma = remembered_sigmas().get(fingerprint) if DATASETS.get(name) and DATASETS[name].has_fixations else None
    for data_dir in ([location] if location else []) + [None]:
        try:
            dataset = open_dataset(name, data_dir, download=False, fixation_sigma=sigma)
        except DatasetError as error:
            reasons.append(error.message)
            continue
        if dataset.fingerprint == fingerprint:
            return dataset
        reasons.append(
            f"the files at {dataset.location} are not the ones stored (fingerprint {dataset.fingerprint[:12]}, stored {fingerprint[:12]})"
        )
    raise DatasetError(f"dataset {name!r} as stored is not on this machine: {reasons[0] if reasons else 'no location recorded'}")


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

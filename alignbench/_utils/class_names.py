"""Class names for class indices, without importing torch (``explain`` captions, the HTML report).

ImageNet-1k's names are timm's (``timm.data.ImageNetInfo``: each class's WordNet lemmas). They are
read here straight from the two text files timm ships, because importing ``timm`` imports torch and
the HTML report must name the classes of stored rows without it. ``tests/html_report/test_html_report.py`` checks
that the names equal ``ImageNetInfo``'s, so a change of timm's file layout is caught.
"""

from __future__ import annotations

import csv
import importlib.util
from functools import lru_cache
from pathlib import Path

IMAGENET_CLASSES = 1000
# timm/data/imagenet_info.py: _SUBSETS["imagenet1k"] and _LEMMA_FILE
_TIMM_SYNSETS = ("data", "_info", "imagenet_synsets.txt")
_TIMM_LEMMAS = ("data", "_info", "imagenet_synset_to_lemma.txt")


def _timm_file(parts: tuple[str, ...]) -> Path:
    spec = importlib.util.find_spec("timm")  # finds the package without running its __init__ (torch)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("timm is not installed")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class descriptions in class-index order (e.g. 0 → 'tench, Tinca tinca')."""
    synsets = _timm_file(_TIMM_SYNSETS).read_text(encoding="utf-8").splitlines()
    with _timm_file(_TIMM_LEMMAS).open(encoding="utf-8", newline="") as handle:
        lemmas = dict(csv.reader(handle, delimiter="\t"))
    return tuple(lemmas[synset] for synset in synsets)


def class_names(num_classes: int) -> list[str]:
    """ImageNet-1k descriptions for a 1000-class model, else 'class i'."""
    if num_classes == IMAGENET_CLASSES:
        return list(imagenet_class_names())
    return [f"class {i}" for i in range(num_classes)]


def class_name(index: int | None, imagenet: bool) -> str:
    """One class's name: ImageNet-1k's where the classes are ImageNet-1k's, else 'class i'; '' for None."""
    if index is None:
        return ""
    if imagenet and 0 <= index < IMAGENET_CLASSES:
        return imagenet_class_names()[index]
    return f"class {index}"

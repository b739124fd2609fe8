"""Each reference map's average ranks, computed once per (dataset, reference recipe), reused by every run.

Spearman ranks both maps; the reference side does not change between models, explainers or runs, so
its ranks are cached on disk. Key: sha256 of (dataset fingerprint, reference recipe — the geometry
and resizing that made the map at the model input size —, cache version). Rows are addressed by the
image's position in the dataset (fixed by the fingerprint), in two files:

- ``<key>.f32``: float32 [N, H·W] ranks (integers and halves: exact in float32 below 2**23 pixels);
  a reference with a non-finite value is stored as NaN, which spearman_from_ranks scores as NaN;
- ``<key>.filled``: uint8 [N], 1 once the row is written (set after the row).

Both are sparse files grown to size up front, so only rows computed take disk: H·W·4 bytes per image
(196 KiB at 224×224; about 10 GB for all of ClickMe val at 224). DataLoader workers fill rows
concurrently with positioned writes; two writers of one row write the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from alignbench._utils.cache import cache_dir, sha256_text
from alignbench.metrics.spearman import rank_average

_CACHE_VERSION = "reference-ranks-v1"


def _open_sized(path: Path, size: int) -> int:
    """A read-write descriptor on ``path``, grown (zero-filled, sparse) to at least ``size`` bytes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if os.fstat(fd).st_size < size:
        os.ftruncate(fd, size)  # existing rows are kept
    return fd


class ReferenceRankCache:
    def __init__(self, fingerprint: str, recipe: str, n_images: int, shape: tuple[int, int]) -> None:
        self.key = sha256_text(_CACHE_VERSION, fingerprint, recipe, f"{n_images}", f"{shape[0]}x{shape[1]}")
        self.n_images = n_images
        self.n_pixels = shape[0] * shape[1]
        directory = cache_dir("reference-ranks")
        self.values_path = directory / f"{self.key}.f32"
        self.filled_path = directory / f"{self.key}.filled"
        self._fds: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:  # descriptors are reopened in each worker
        return {**self.__dict__, "_fds": None}

    def __del__(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)

    def _open(self) -> tuple[int, int]:
        # Positioned reads and writes, not memory maps: a run over 50,000 images keeps its memory flat.
        if self._fds is None:
            self._fds = (
                _open_sized(self.values_path, self.n_images * self.n_pixels * 4),
                _open_sized(self.filled_path, self.n_images),
            )
        return self._fds

    def ranks(self, index: int, reference: Tensor) -> Tensor:
        """float32 [H·W] average ranks of ``reference`` (the map of image ``index``)."""
        values_fd, filled_fd = self._open()
        row_bytes = self.n_pixels * 4
        if os.pread(filled_fd, 1, index) == b"\x01":
            stored = os.pread(values_fd, row_bytes, index * row_bytes)
            if len(stored) == row_bytes:
                return torch.from_numpy(np.frombuffer(bytearray(stored), dtype=np.float32))
        flat = reference.reshape(-1)
        if bool(torch.isfinite(flat).all()):
            ranks = rank_average(flat[None])[0].to(torch.float32)
        else:
            ranks = torch.full((self.n_pixels,), float("nan"), dtype=torch.float32)
        os.pwrite(values_fd, ranks.numpy().tobytes(), index * row_bytes)
        os.pwrite(filled_fd, b"\x01", index)  # only after the row is written
        return ranks

"""The one memoised sha256 cache (alignbench._utils.file_hashes), shared by weights and datasets."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from alignbench._utils.file_hashes import cached_sha256, file_sha256, known_sha256, remember_sha256


def test_a_digest_is_computed_once_and_forgotten_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"abc" * 1000)
    assert known_sha256([path]) == [None]
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert known_sha256([path]) == [file_sha256(path)]
    calls = []
    assert cached_sha256([path], compute=lambda p: calls.append(p) or "never") == [file_sha256(path)] and calls == []
    path.write_bytes(b"other")
    os.utime(path, ns=(1, 1))  # another size and mtime
    assert known_sha256([path]) == [None] and file_sha256(path) == hashlib.sha256(b"other").hexdigest()


def test_a_digest_computed_elsewhere_is_remembered(tmp_path: Path) -> None:
    path = tmp_path / "download.bin"
    path.write_bytes(b"payload")
    remember_sha256(path, "f" * 64)  # e.g. hashed while it was downloaded
    assert file_sha256(path) == "f" * 64

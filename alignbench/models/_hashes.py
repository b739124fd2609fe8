"""sha256 of weight files, remembered by (path, size, mtime) so that repeated calls are instant (torch-free).

Model fingerprints hash the weight files they come from; hashing a 350 MB checkpoint takes seconds,
so the digest is kept in ``<cache>/hashes/sha256.json`` until the file's size or mtime changes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from alignbench._utils.cache import cache_dir, sha256_file


def _index_path() -> Path:
    return cache_dir("hashes") / "sha256.json"


def _read_index() -> dict[str, dict]:
    try:
        return json.loads(_index_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_index(index: dict[str, dict]) -> None:
    path = _index_path()
    # Write-then-rename: concurrent processes never read half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sha256-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(index, handle)
    os.replace(tmp, path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, from the index when its size and mtime are unchanged."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    index = _read_index()
    entry = index.get(key)
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    digest = sha256_file(path)
    index = _read_index()  # re-read: another process may have added entries meanwhile
    index[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _write_index(index)
    return digest


def remember_sha256(path: str | os.PathLike[str], digest: str) -> None:
    """Record a digest computed elsewhere (e.g. while downloading) for the file as it is now."""
    path = Path(path).resolve()
    stat = path.stat()
    index = _read_index()
    index[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _write_index(index)

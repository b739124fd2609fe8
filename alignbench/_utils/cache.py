"""Where downloads and derived files are cached, and content hashes of files (torch-free)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def cache_dir(*parts: str) -> Path:
    """``$ALIGNBENCH_CACHE`` or ``$XDG_CACHE_HOME/alignbench`` (``~/.cache/alignbench``), created."""
    root = os.environ.get("ALIGNBENCH_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alignbench"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(*parts: str) -> str:
    """Hex sha256 of the parts joined by NUL: the identity of a tuple of strings."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()

"""sha256 of files, remembered by (path, size, mtime_ns) so re-opening a dataset or re-fingerprinting
weights reads no file (torch-free): the one memoised sha256 cache.

A dataset's fingerprint is a hash of its files' contents, a model's the hash of its weight file;
hashing a few GB (or a 350 MB checkpoint) on every ``score`` would cost seconds, so each file's digest is kept in one JSON document under the cache and reused while
the file's size and modification time are unchanged (make's test for "unchanged", plus the size).
For a whole dataset, ``fingerprint_files`` goes one step further: the fingerprint itself is
remembered under a hash of the listing (names, sizes, mtimes), so re-opening 50,000 ImageNet files
costs their ``stat`` calls, not a 50,000-entry JSON document. Writes are atomic (temp file +
rename), so concurrent runs at worst recompute a digest.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from alignbench._utils.cache import cache_dir, sha256_file, sha256_text

_STORE_NAME = "file-sha256.json"


def _store_path() -> Path:
    return cache_dir("hashes") / _STORE_NAME


def _load() -> dict[str, list]:
    try:
        with open(_store_path(), encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(entries: dict[str, list]) -> None:
    path = _store_path()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".file-sha256-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle, separators=(",", ":"))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _signature(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


_PROGRESS_BYTES = 256 << 20  # show a progress bar when this much is still to hash
_SAVE_EVERY_SECONDS = 30  # an interrupted first hashing of a large dataset keeps what it did


def cached_sha256(paths: Sequence[Path], compute: Callable[[Path], str] = sha256_file, *, what: str = "hashing files") -> list[str]:
    """Hex sha256 of each file, computing (with ``compute``) only those not seen unchanged before.

    ``compute`` lets a caller hash a file while it reads it for another purpose (the ClickMe shard
    scan), instead of reading it twice. Hashing more than 256 MiB shows a progress bar on stderr.
    """
    entries = _load()
    signatures = [_signature(path) for path in paths]
    digests: list[str | None] = []
    todo: list[int] = []
    for i, (key, size, mtime_ns) in enumerate(signatures):
        known = entries.get(key)
        fresh = known is not None and known[0] == size and known[1] == mtime_ns
        digests.append(known[2] if fresh else None)
        if not fresh:
            todo.append(i)
    if not todo:
        return digests  # type: ignore[return-value]

    pending, saved_at = 0, time.monotonic()
    total_bytes = sum(signatures[i][1] for i in todo)
    progress = _progress(what, total_bytes) if total_bytes > _PROGRESS_BYTES else None
    try:
        for i in todo:
            digest = compute(paths[i])
            digests[i] = digest
            # A file replaced while being hashed must not be remembered as hashed.
            if _signature(paths[i]) == signatures[i]:
                key, size, mtime_ns = signatures[i]
                entries[key] = [size, mtime_ns, digest]
                pending += 1
            if progress is not None:
                progress[0].advance(progress[1], signatures[i][1])
            if pending and time.monotonic() - saved_at > _SAVE_EVERY_SECONDS:
                entries, pending, saved_at = {**_load(), **entries}, 0, time.monotonic()
                _save(entries)
    finally:
        if progress is not None:
            progress[0].stop()
        if pending:
            _save({**_load(), **entries})  # keep digests another process saved meanwhile
    return digests  # type: ignore[return-value]


def _progress(what: str, total_bytes: int):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    progress.start()
    return progress, progress.add_task(what, total=total_bytes)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of one file, from the cache while its size and mtime are unchanged."""
    return cached_sha256([Path(path)])[0]


def remember_sha256(path: str | os.PathLike[str], digest: str) -> None:
    """Record a digest computed elsewhere (e.g. while downloading) for the file as it is now."""
    key, size, mtime_ns = _signature(Path(path))
    _save({**_load(), key: [size, mtime_ns, digest]})


def known_sha256(paths: Sequence[Path]) -> list[str | None]:
    """The remembered digest of each file, None where the file changed or was never hashed."""
    entries = _load()
    digests: list[str | None] = []
    for path in paths:
        key, size, mtime_ns = _signature(path)
        known = entries.get(key)
        digests.append(known[2] if known and known[0] == size and known[1] == mtime_ns else None)
    return digests


def fingerprint_files(label: str, root: Path, names: Sequence[str], *, what: str) -> str:
    """sha256 identity of a dataset: ``label`` and each file's name (relative to ``root``, '/'
    separated) and content."""
    base = os.fspath(root)
    full = [os.path.join(base, name) for name in names]
    listing = []
    for name, path in zip(names, full):
        stat = os.stat(path)
        listing.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    remembered = cache_dir("hashes", "listings") / f"{sha256_text(label, os.path.realpath(base), *listing)}.txt"
    try:
        return remembered.read_text(encoding="ascii").strip()
    except OSError:
        pass
    digests = cached_sha256([Path(path) for path in full], what=what)
    fingerprint = sha256_text(label, *(f"{name}={digest}" for name, digest in zip(names, digests)))
    fd, temporary = tempfile.mkstemp(dir=remembered.parent, prefix=".listing-")
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(fingerprint)
    os.replace(temporary, remembered)
    return fingerprint

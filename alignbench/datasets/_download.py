"""Resumable HTTP downloads with a progress bar on stderr (torch-free).

A file is fetched into ``<name>.part`` and renamed when complete; an interrupted download resumes
with an HTTP Range request from the bytes it has. Every failure is a DatasetError naming the URL.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignbench import __version__
from alignbench.errors import DatasetError

_CHUNK = 1 << 20
_TIMEOUT_SECONDS = 60


def _total_from_content_range(header: str | None) -> int | None:
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


def _fetch(url: str, target: Path, progress: Any, hint: str) -> None:
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"alignbench/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing past what we have: complete, or a stale .part
            if _total_from_content_range(error.headers.get("Content-Range")) == have:
                part.replace(target)
                return
            part.unlink()
            return _fetch(url, target, progress, hint)
        raise DatasetError(f"could not download {url}: HTTP {error.code} {error.reason}; {hint}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DatasetError(f"could not download {url}: {reason}; {hint}") from None

    with response:
        if response.status == 206:  # the server resumes where the .part ends
            total = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
        else:  # a full response: start over
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            have, mode = 0, "wb"
        task = progress.add_task(target.name, total=total, completed=have)
        try:
            with open(part, mode) as handle:
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    progress.advance(task, len(chunk))
        except OSError as error:
            raise DatasetError(
                f"download of {url} was interrupted ({error}); run again to resume from {part}, or {hint}"
            ) from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DatasetError(
            f"download of {url} stopped at {size} of {total} bytes; run again to resume, or {hint}"
        )
    part.replace(target)


def download_files(base_url: str, names: Sequence[str], destination: Path, *, hint: str) -> list[Path]:
    """Fetch ``base_url/<name>`` for each name not yet in ``destination``; returns every path.

    ``hint`` ends each error message: what to do without the network (e.g. pass --data-dir).
    """
    destination.mkdir(parents=True, exist_ok=True)
    targets = [destination / name for name in names]
    missing = [target for target in targets if not target.exists()]
    if missing:
        from rich.console import Console
        from rich.progress import (
            BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
        )

        progress = Progress(
            TextColumn("[bold]download[/] {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        with progress:
            for target in missing:
                _fetch(f"{base_url.rstrip('/')}/{target.name}", target, progress, hint)
    return targets

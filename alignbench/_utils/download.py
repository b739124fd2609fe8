"""Resumable HTTP downloads with a progress bar on stderr (torch-free): the one downloader of weights
(``models._download``) and datasets (``datasets._clickme``).

A file is fetched into ``<name>.part`` and renamed into place only when complete (as long as the
server announced); an interrupted download resumes with an HTTP Range request from the bytes it has.
Failures are ``DownloadError`` subclasses carrying what happened; each caller words them as its own
one-line error (what to do without the network differs between weights and data).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alignbench import __version__

_CHUNK = 1 << 20
USER_AGENT = f"alignbench/{__version__} (+https://pypi.org/project/alignbench)"


class DownloadError(Exception):
    """A download that did not complete; the ``.part`` file is kept where it can be resumed."""


class Unreachable(DownloadError):
    """No response: the server refused (``status``, ``http_reason``) or could not be reached (``reason``)."""

    def __init__(self, reason: object, status: int | None = None, http_reason: str = "") -> None:
        super().__init__(str(reason))
        self.reason, self.status, self.http_reason = reason, status, http_reason


class BrokenOff(DownloadError):
    """The transfer broke off (reset, timeout) after ``received`` bytes."""

    def __init__(self, received: int, error: BaseException) -> None:
        super().__init__(f"broke off at {received} bytes ({error})")
        self.received, self.error = received, error


class Incomplete(DownloadError):
    """The response ended at ``received`` of the ``total`` bytes the server announced."""

    def __init__(self, received: int, total: int) -> None:
        super().__init__(f"stopped at {received} of {total} bytes")
        self.received, self.total = received, total


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def _total_from_content_range(header: str | None) -> int | None:
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


@contextmanager
def download_progress() -> Iterator[Any]:
    """A rich progress bar on stderr (stdout stays clean for --json); one task per file. The bar
    appears with the first transfer: a download refused before any byte (no network) prints its
    one-line error alone."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    add_task = progress.add_task

    def start_then_add_task(*args: Any, **kwargs: Any) -> Any:
        if not progress.live.is_started:
            progress.start()
        return add_task(*args, **kwargs)

    progress.add_task = start_then_add_task
    try:
        yield progress
    finally:
        if progress.live.is_started:  # Progress.stop prints a newline even when it never started
            progress.stop()


def _hash_part(part: Path, digests: Sequence[Any]) -> None:
    with open(part, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            for digest in digests:
                digest.update(chunk)


def download(
    url: str,
    target: Path,
    *,
    progress: Any,
    description: str,
    timeout: float,
    hashes: Sequence[str] = (),
) -> dict[str, str]:
    """Fetch ``url`` into ``target`` (resuming ``target.part``) and return the hex digests named in
    ``hashes`` (e.g. ``("sha256", "md5")``) of the whole file. DownloadError if it does not complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    have = part.stat().st_size if part.exists() else 0
    digests = [hashlib.new(name) for name in hashes]
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing past what we have: complete, or a stale .part
            if _total_from_content_range(error.headers.get("Content-Range")) == have:
                _hash_part(part, digests)
                part.replace(target)
                return {name: digest.hexdigest() for name, digest in zip(hashes, digests)}
            part.unlink()
            return download(url, target, progress=progress, description=description, timeout=timeout, hashes=hashes)
        raise Unreachable(error.reason, error.code, str(error.reason)) from None
    except (urllib.error.URLError, OSError) as error:
        raise Unreachable(getattr(error, "reason", error)) from None

    with response:
        if response.status == 206:  # the server resumes where the .part ends
            total = _total_from_content_range(response.headers.get("Content-Range"))
            _hash_part(part, digests)
            mode = "ab"
        else:  # a full response (the server ignored the range): start over
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            have, mode = 0, "wb"
        task = progress.add_task(description, total=total, completed=have)
        received = have
        try:
            with open(part, mode) as handle:
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    for digest in digests:
                        digest.update(chunk)
                    received += len(chunk)
                    progress.advance(task, len(chunk))
        except (OSError, http.client.HTTPException) as error:  # reset, timeout: keep the part
            raise BrokenOff(received, error) from None
    if total is not None and received != total:
        raise Incomplete(received, total)
    part.replace(target)
    return {name: digest.hexdigest() for name, digest in zip(hashes, digests)}

"""Downloads of published weights into the cache: resumable, with a progress bar, verified (torch-free).

A download is written to ``<file>.part`` and resumed from there with an HTTP Range request. Only a
complete file (size as announced by the server, md5 as published by Zenodo when it can be asked) is
renamed into place, next to a ``<file>.json`` record of its url, size and sha256. A cached file
whose record is missing or whose sha256 no longer matches it is truncated or corrupt: it is
discarded and fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from alignbench.errors import ModelError, WeightsUnavailableError
from alignbench.models._hashes import file_sha256, remember_sha256

_CHUNK = 1 << 20
_USER_AGENT = "alignbench (+https://pypi.org/project/alignbench)"


def record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".json")


def read_record(dest: Path) -> dict | None:
    """The download record of ``dest`` if the file is there with the recorded size (sha unchecked)."""
    try:
        record = json.loads(record_path(dest).read_text())
        if dest.stat().st_size == record["size"]:
            return record
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def is_verified(dest: Path) -> bool:
    record = read_record(dest)
    return record is not None and file_sha256(dest) == record.get("sha256")


def discard(dest: Path) -> None:
    for path in (dest, record_path(dest), dest.with_name(dest.name + ".part")):
        path.unlink(missing_ok=True)


def _unavailable(what: str, url: str, reason: object) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"cannot download {what} from {url} ({reason}); fetch that file where there is network "
        "and pass it with --checkpoint PATH"
    )


def fetch(url: str, dest: Path, *, what: str, md5: str | None = None, timeout: float = 30.0) -> Path:
    """``dest``, downloaded from ``url`` unless a verified copy is already there."""
    if dest.exists():
        if is_verified(dest):
            return dest
        discard(dest)  # no record, or another digest: truncated or corrupt
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the part is no prefix the server can continue: restart
            part.unlink()
            return fetch(url, dest, what=what, md5=md5, timeout=timeout)
        raise _unavailable(what, url, f"HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise _unavailable(what, url, getattr(error, "reason", error)) from None

    sha, md5_hash = hashlib.sha256(), hashlib.md5()
    with response:
        if response.status == 206:
            total = int(response.headers.get("Content-Range", "*/0").rsplit("/", 1)[-1] or 0) or None
            with open(part, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    sha.update(chunk)
                    md5_hash.update(chunk)
            mode = "ab"
        else:  # the server ignored the range: start over
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
        received = offset
        try:
            with open(part, mode) as handle, _progress(what, total, offset) as advance:
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    sha.update(chunk)
                    md5_hash.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
        except (OSError, http.client.HTTPException) as error:  # reset, timeout: keep the part
            raise WeightsUnavailableError(
                f"download of {what} from {url} broke off at {received} bytes ({error}); "
                "run the command again to resume"
            ) from None
    if total is not None and received != total:
        raise WeightsUnavailableError(
            f"download of {what} from {url} stopped at {received} of {total} bytes; "
            "run the command again to resume"
        )
    if md5 is not None and md5_hash.hexdigest() != md5:
        part.unlink()
        raise ModelError(
            f"download of {what} from {url} is corrupt (md5 {md5_hash.hexdigest()} != published {md5}); "
            "run the command again to fetch it afresh"
        )
    os.replace(part, dest)
    digest = sha.hexdigest()
    record = {"url": url, "size": received, "sha256": digest, "md5": md5_hash.hexdigest()}
    record_path(dest).write_text(json.dumps(record, indent=1))
    remember_sha256(dest, digest)
    return dest


def zenodo_md5(record: int, filename: str, timeout: float = 10.0) -> str | None:
    """The md5 Zenodo publishes for a file of a record, or None when it cannot be asked."""
    url = f"https://zenodo.org/api/records/{record}"
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            files = json.load(response).get("files", [])
    except (urllib.error.URLError, OSError, ValueError):
        return None
    for entry in files:
        checksum = str(entry.get("checksum", ""))
        if entry.get("key") == filename and checksum.startswith("md5:"):
            return checksum.removeprefix("md5:")
    return None


class _progress:
    """A rich progress bar on stderr (stdout stays clean for --json)."""

    def __init__(self, what: str, total: int | None, done: int) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
        )
        self._task = self._progress.add_task(f"downloading {what}", total=total, completed=done)

    def __enter__(self):
        self._progress.start()
        return lambda n: self._progress.advance(self._task, n)

    def __exit__(self, *exc_info) -> None:
        self._progress.stop()

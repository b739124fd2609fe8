"""Downloads of published weights into the cache: resumable, with a progress bar, verified (torch-free).

A download (``alignbench._utils.download``) is written to ``<file>.part`` and resumed from there with
an HTTP Range request. Only a complete file (size as announced by the server, md5 as published by
Zenodo when it can be asked) is kept, next to a ``<file>.json`` record of its url, size and sha256. A cached file
whose record is missing or whose sha256 no longer matches it is truncated or corrupt: it is
discarded and fetched again.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from alignbench._utils.download import USER_AGENT, DownloadError, Unreachable, download, download_progress, part_path
from alignbench._utils.file_hashes import file_sha256, remember_sha256
from alignbench.errors import ModelError, WeightsUnavailableError


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
    for path in (dest, record_path(dest), part_path(dest)):
        path.unlink(missing_ok=True)


def _unavailable(what: str, url: str, reason: object) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"cannot download {what} from {url} ({reason}); fetch that file where there is network and pass it with --checkpoint PATH"
    )


def fetch(url: str, dest: Path, *, what: str, md5: str | None = None, timeout: float = 30.0) -> Path:
    """``dest``, downloaded from ``url`` unless a verified copy is already there."""
    if dest.exists():
        if is_verified(dest):
            return dest
        discard(dest)  # no record, or another digest: truncated or corrupt
    try:
        with download_progress() as progress:
            digests = download(
                url, dest, progress=progress, description=f"[bold]downloading {what}", timeout=timeout, hashes=("sha256", "md5")
            )
    except Unreachable as error:
        raise _unavailable(what, url, f"HTTP {error.status}" if error.status else error.reason) from None
    except DownloadError as error:  # broke off, or stopped short of the announced size: the part is kept
        raise WeightsUnavailableError(f"download of {what} from {url} {error}; run the command again to resume") from None
    if md5 is not None and digests["md5"] != md5:
        dest.unlink()
        raise ModelError(
            f"download of {what} from {url} is corrupt (md5 {digests['md5']} != published {md5}); run the command again to fetch it afresh"
        )
    record = {"url": url, "size": dest.stat().st_size, "sha256": digests["sha256"], "md5": digests["md5"]}
    record_path(dest).write_text(json.dumps(record, indent=1))
    remember_sha256(dest, digests["sha256"])
    return dest


def zenodo_md5(record: int, filename: str, timeout: float = 10.0) -> str | None:
    """The md5 Zenodo publishes for a file of a record, or None when it cannot be asked."""
    url = f"https://zenodo.org/api/records/{record}"
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            files = json.load(response).get("files", [])
    except (urllib.error.URLError, OSError, ValueError):
        return None
    for entry in files:
        checksum = str(entry.get("checksum", ""))
        if entry.get("key") == filename and checksum.startswith("md5:"):
            return checksum.removeprefix("md5:")
    return None

"""Downloads of published weights: resumed, verified, refetched when corrupt (a local HTTP server)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alignbench._utils.file_hashes import file_sha256
from alignbench.errors import ModelError, WeightsUnavailableError
from alignbench.models._download import fetch, is_verified, record_path

PAYLOAD = bytes(range(256)) * 40_000  # 10 MB: several 1 MiB chunks


class _Server:
    """Serves PAYLOAD at /weights.pth with HTTP Range support; can break off after N bytes."""

    def __init__(self) -> None:
        self.requests: list[str | None] = []  # the Range header of each request
        self.break_after: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.headers.get("Range"))
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.break_after is not None:
                    body, server.break_after = body[: server.break_after], None
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights.pth"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture()
def server():
    serving = _Server()
    yield serving
    serving.httpd.shutdown()
    serving.httpd.server_close()


def test_download_records_size_and_sha256(server: _Server, tmp_path: Path) -> None:
    dest = fetch(server.url, tmp_path / "w.pth", what="test weights", md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    record = json.loads(record_path(dest).read_text())
    assert record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() == file_sha256(dest)
    assert record["size"] == len(PAYLOAD) and record["url"] == server.url
    fetch(server.url, dest, what="test weights")  # verified copy: no second request
    assert server.requests == [None]


def test_broken_download_resumes_where_it_stopped(server: _Server, tmp_path: Path) -> None:
    server.break_after = 3_000_000
    dest = tmp_path / "w.pth"
    with pytest.raises(WeightsUnavailableError, match=r"stopped at 3000000 of 10240000 bytes; run the command again to resume"):
        fetch(server.url, dest, what="test weights")
    assert not dest.exists() and (tmp_path / "w.pth.part").stat().st_size == 3_000_000
    fetch(server.url, dest, what="test weights")
    assert server.requests == [None, "bytes=3000000-"]
    assert dest.read_bytes() == PAYLOAD and is_verified(dest)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "no record"])
def test_damaged_cached_file_is_fetched_again(server: _Server, tmp_path: Path, damage: str) -> None:
    dest = fetch(server.url, tmp_path / "w.pth", what="test weights")
    if damage == "truncated":
        dest.write_bytes(PAYLOAD[:1000])
    elif damage == "corrupt":
        dest.write_bytes(b"\0" * len(PAYLOAD))  # same size, other bytes
    else:
        record_path(dest).unlink()
    assert not is_verified(dest)
    fetch(server.url, dest, what="test weights")
    assert dest.read_bytes() == PAYLOAD and len(server.requests) == 2


def test_md5_mismatch_is_corrupt_and_not_kept(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"is corrupt \(md5 .* != published 0{32}\)"):
        fetch(server.url, tmp_path / "w.pth", what="test weights", md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_says_what_and_how(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights.pth"
    with pytest.raises(WeightsUnavailableError) as error:
        fetch(url, tmp_path / "w.pth", what="the test checkpoint", timeout=5)
    assert f"cannot download the test checkpoint from {url}" in error.value.message
    assert "--checkpoint PATH" in error.value.message

"""The one resumable downloader (alignbench._utils.download), under weights and datasets alike."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alignbench._utils.download import Incomplete, Unreachable, download, part_path

PAYLOAD = bytes(range(256)) * 9_000  # 2.3 MB: a few 1 MiB chunks


class _NoProgress:
    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, task: int, n: int) -> None:
        pass


@pytest.fixture()
def server():
    state = {"ranges": [], "break_after": None}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            wanted = self.headers.get("Range")
            state["ranges"].append(wanted)
            start = int(wanted.split("=")[1].rstrip("-")) if wanted else 0
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.end_headers()
                return
            body = PAYLOAD[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state["break_after"] is not None:
                body, state["break_after"] = body[: state["break_after"]], None
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/file.bin", state
    httpd.shutdown()
    httpd.server_close()


def test_a_broken_download_resumes_and_hashes_the_whole_file(server, tmp_path: Path) -> None:
    url, state = server
    target = tmp_path / "file.bin"
    state["break_after"] = 1_000_000
    with pytest.raises(Incomplete) as error:
        download(url, target, progress=_NoProgress(), description="test", timeout=5)
    assert str(error.value) == f"stopped at 1000000 of {len(PAYLOAD)} bytes"
    assert not target.exists() and part_path(target).stat().st_size == 1_000_000
    digests = download(url, target, progress=_NoProgress(), description="test", timeout=5, hashes=("sha256", "md5"))
    assert state["ranges"] == [None, "bytes=1000000-"] and target.read_bytes() == PAYLOAD
    assert digests == {"sha256": hashlib.sha256(PAYLOAD).hexdigest(), "md5": hashlib.md5(PAYLOAD).hexdigest()}


def test_a_complete_part_is_kept_when_the_server_has_nothing_more(server, tmp_path: Path) -> None:
    url, state = server
    target = tmp_path / "file.bin"
    part_path(target).write_bytes(PAYLOAD)
    assert download(url, target, progress=_NoProgress(), description="test", timeout=5, hashes=("sha256",)) == {
        "sha256": hashlib.sha256(PAYLOAD).hexdigest()
    }
    assert target.read_bytes() == PAYLOAD and state["ranges"] == [f"bytes={len(PAYLOAD)}-"]


def test_an_unreachable_server_is_one_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Unreachable) as error:
        download(f"http://127.0.0.1:{port}/file.bin", tmp_path / "file.bin", progress=_NoProgress(), description="test", timeout=5)
    assert error.value.status is None and not (tmp_path / "file.bin").exists()

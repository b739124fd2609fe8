"""A headless Chromium driven over the DevTools protocol, for the HTML report's end-to-end test.

Debian's ``chromium`` (installed by ``scripts/system_packages.sh``) is started with the flags below,
a fresh profile directory and ``--remote-debugging-port=0``; Chromium writes the port it chose to
``DevToolsActivePort`` in the profile, and this client talks to it over one loopback websocket
(``websocket-client``), on one page target attached with flat sessions. Written here because the
test needs only a handful of commands (navigate, evaluate, screenshot) and the console and network
events; Selenium would add a second browser binary (chromium-driver) for the same.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import websocket

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 60.0


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium process and one page; use as a context manager (the process is ended on exit)."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed; run scripts/system_packages.sh (Debian package chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="alignbench-chromium-"))
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        try:
            port, path = self._endpoint()
            # Chromium refuses DevTools websockets that carry an Origin header it was not told to allow
            self.socket = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=COMMAND_TIMEOUT_S, suppress_origin=True)
            target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.page(f"{domain}.enable")
            self.page("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    def _endpoint(self) -> tuple[int, str]:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.process.returncode} before it listened")
            lines = active.read_text().splitlines() if active.is_file() else []
            if len(lines) >= 2:
                return int(lines[0]), lines[1]
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not write {active} within {START_TIMEOUT_S:.0f} s")

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept in ``events``."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while time.monotonic() < deadline:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)
        raise TimeoutError(f"{method}: no answer within {COMMAND_TIMEOUT_S:.0f} s")

    def page(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.send(method, params, session=self.session)

    def wait_for(self, method: str, timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        """The first event ``method`` received from now (or already kept)."""
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["method"] == method:
                return event
        while time.monotonic() < deadline:
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            event = json.loads(self.socket.recv())
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event
        raise TimeoutError(f"no {method} within {timeout:.0f} s")

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (every image of the page loaded or failed)."""
        self.events.clear()
        self.page("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (e.g. a file that failed to load)."""
        errors = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])))
            elif event["method"] == "Runtime.exceptionThrown":
                errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
            elif event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(params["entry"].get("text", ""))
        return errors

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> Path:
        """The whole page (not just the viewport) as a PNG."""
        data = self.page("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def capture(self, selector: str) -> bytes:
        """A PNG of the first element matching ``selector``, scrolled into view, as drawn (one device
        pixel per CSS pixel). Within the viewport: capturing beyond it resizes the viewport, which
        drops the scroll bar and reflows the page under the clip."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()"
        )
        clip = dict(zip(("x", "y", "width", "height"), box), scale=1)
        return base64.b64decode(self.page("Page.captureScreenshot", {"format": "png", "clip": clip})["data"])

    def close(self) -> None:
        try:
            if getattr(self, "socket", None) is not None:
                try:
                    self.send("Browser.close")
                except Exception:  # it may close before it answers
                    pass
                self.socket.close()
        finally:
            if self.process.poll() is None:
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

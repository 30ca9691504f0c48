"""Load a page in a real headless Chromium and report what a person would see: console errors, failed loads and
a screenshot.

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages separated
by NUL bytes, written to the browser's file descriptor 3 and read from its descriptor 4), so no network port and
no client library are needed. Chromium comes from the system's packages (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLoad:
    """What loading a page produced: console messages and log entries at error level (uncaught exceptions,
    ``console.error``, resources that failed to load), the screenshot (PNG bytes) and ``facts``: values the page
    computed on request (``evaluate``)."""

    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    facts: dict[str, object] = field(default_factory=dict)


class _Pipe:
    def __init__(self, to_browser: int, from_browser: int):
        self._write, self._read = to_browser, from_browser
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from the browser")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)


def load_page(chromium: str, page: Path, width: int = 1280, height: int = 2000,
              evaluate: dict[str, str] | None = None, settle_s: float = 0.5) -> PageLoad:
    """Open ``page`` (a file) at ``width`` x ``height``, wait for its load event, collect errors, evaluate each
    JavaScript expression of ``evaluate`` (name -> expression) and take a screenshot of the viewport."""
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()

    def wire_descriptors() -> None:
        # In the child, before exec: the browser reads fd 3 and writes fd 4. Copies above 4 first, so that neither
        # dup2 overwrites the other pipe; dup2 makes 3 and 4 inheritable, everything else Python opened is not.
        reading = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD_CLOEXEC, 10)
        writing = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD_CLOEXEC, 10)
        os.dup2(reading, 3)
        os.dup2(writing, 4)

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        process = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_descriptors, close_fds=False,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        pipe = _Pipe(to_browser_write, from_browser_read)
        try:
            return _drive(pipe, page, width, height, evaluate or {}, settle_s)
        finally:
            try:
                pipe.send("Browser.close", timeout=5)
            except (RuntimeError, TimeoutError, OSError):
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            os.close(to_browser_write)
            os.close(from_browser_read)


def _drive(pipe: _Pipe, page: Path, width: int, height: int, evaluate: dict[str, str], settle_s: float) -> PageLoad:
    target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        pipe.send(f"{domain}.enable", session=session)
    pipe.send("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
    pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    pipe.wait_for("Page.loadEventFired", timeout=60)
    time.sleep(settle_s)  # late console messages arrive as events with the next replies
    result = PageLoad()
    for name, expression in evaluate.items():
        reply = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        result.facts[name] = reply.get("result", {}).get("value")
    screenshot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session, timeout=60)
    result.screenshot = base64.b64decode(screenshot["data"])
    for event in pipe.events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            result.errors.append(f"exception: {text}")
        elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            values = (str(arg.get("value", arg.get("description"))) for arg in params.get("args", []))
            result.errors.append("console: " + " ".join(values))
        elif event.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            result.errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
    return result

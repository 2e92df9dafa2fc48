"""Open a page in headless Chromium through the Chrome DevTools Protocol over ``--remote-debugging-pipe``.

Reports console errors, uncaught exceptions, every network request, the load time and a full-page
screenshot. Hand-written (about 100 lines) rather than playwright: playwright's wheel brings a
Node driver and expects its own browser build; the pipe needs Debian's ``chromium`` and nothing
else. Messages are JSON objects separated by NUL bytes on fds 3 (to Chromium) and 4 (from it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-extensions",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@dataclass
class PageVisit:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    load_ms: float | None = None  # navigation start -> load event end, from the page's own timing
    wall_ms: float = 0.0  # navigate command -> load event seen here
    screenshot: bytes = b""  # PNG
    size: tuple[int, int] = (0, 0)  # CSS px of the whole page
    value: Any = None  # what visit's ``expression`` gave, evaluated in the loaded page

    @property
    def network_requests(self) -> list[str]:
        """Requests that would leave the machine (anything but the file itself and data: URLs)."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:"))]


class _Pipe:
    def __init__(self, proc: subprocess.Popen[bytes], to_fd: int, from_fd: int) -> None:
        self.proc, self.to_fd, self.from_fd = proc, to_fd, from_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.from_fd, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return dict(json.loads(raw))

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout_s: float = 20.0,
    ) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_fd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result") or {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event


def visit(
    page: Path,
    chromium: str,
    width: int = 1000,
    height: int = 900,
    timeout_s: float = 25.0,
    expression: str | None = None,
) -> PageVisit:
    """Load ``page`` (a local file), wait for its load event, take a full-page screenshot; the
    JavaScript ``expression``'s value (JSON-able), when given, goes into the result's ``value``."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="edgedeploy-chromium-") as profile:

        def wire() -> None:  # in the child: Chromium reads commands on fd 3, writes replies on fd 4
            high_r, high_w = os.dup(to_r), os.dup(from_w)  # so neither dup2 overwrites the other's source
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        proc = subprocess.Popen(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,
            pass_fds=(3, 4),  # kept open after preexec_fn
        )
        os.close(to_r)
        os.close(from_w)
        pipe = _Pipe(proc, to_w, from_r)
        try:
            return _visit(pipe, page, width, height, timeout_s, expression)
        finally:
            with contextlib.suppress(Exception):
                pipe.call("Browser.close", timeout_s=5)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_w)
            os.close(from_r)


def _visit(
    pipe: _Pipe, page: Path, width: int, height: int, timeout_s: float, expression: str | None
) -> PageVisit:
    target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout_s=timeout_s)["targetId"]
    session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.call(f"{domain}.enable", session=session)
    pipe.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    pipe.events.clear()
    result = PageVisit()
    start = time.monotonic()
    pipe.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    pipe.wait_event("Page.loadEventFired", timeout_s)
    result.wall_ms = (time.monotonic() - start) * 1000.0
    timing = pipe.call(
        "Runtime.evaluate",
        {
            "expression": "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return n ? n.loadEventEnd || n.duration : null; })()",
            "returnByValue": True,
        },
        session=session,
    )
    value = (timing.get("result") or {}).get("value")
    result.load_ms = float(value) if isinstance(value, (int, float)) else None
    if expression is not None:
        asked = pipe.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        result.value = (asked.get("result") or {}).get("value")
    metrics = pipe.call("Page.getLayoutMetrics", session=session)
    content = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
    full_w, full_h = int(content.get("width", width)), int(content.get("height", height))
    result.size = (full_w, full_h)
    shot = pipe.call(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": full_w, "height": min(full_h, 16000), "scale": 1},
        },
        session=session,
        timeout_s=timeout_s,
    )
    result.screenshot = base64.b64decode(shot["data"])
    for event in pipe.events:
        method, params = event.get("method"), event.get("params") or {}
        if method == "Network.requestWillBeSent":
            result.requests.append(str((params.get("request") or {}).get("url")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args") or []
            result.console_errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in args)
            )
        elif method == "Runtime.exceptionThrown":
            result.console_errors.append(str((params.get("exceptionDetails") or {}).get("text")))
        elif method == "Log.entryAdded" and (params.get("entry") or {}).get("level") == "error":
            entry = params["entry"]
            result.console_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
    return result

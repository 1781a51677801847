"""A headless Debian chromium driven over the Chrome DevTools protocol, for the page tests.

Only what the tests need: open a page, set a file input, evaluate JavaScript, take a
screenshot. The browser comes from Debian's `chromium` package (installed by
`ensure_chromium` when missing and we are root, as in CI); nothing is ever downloaded by a
driver manager.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=900,720",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def ensure_chromium() -> tuple[str | None, str]:
    """(path of Debian's chromium, "") once it is there, installing it with apt when root; else (None, why not)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "Debian's chromium is not installed and apt-get cannot install it here (needs root): apt-get install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd, limit in ((["apt-get", "update", "-qq"], 600), (["apt-get", "install", "-y", "-qq", "chromium"], 1200)):
        done = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=limit)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            return None, f"Debian's chromium is not installed and `{' '.join(cmd)}` failed: {last}"
    if not Path(CHROMIUM).exists():
        return None, f"apt-get installed chromium but {CHROMIUM} is missing"
    return CHROMIUM, ""


class Browser:
    """One chromium process and a DevTools connection to its page."""

    def __init__(self, binary: str, profile: Path, url: str = "about:blank", timeout: float = 60):
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.ids = itertools.count(1)
        self.connection = contextlib.ExitStack()  # websockets wants connect() used as a context manager
        try:
            self.ws = self._connect(profile / "DevToolsActivePort", timeout)
        except BaseException:
            self.close()  # a browser that never answered must not outlive the test
            raise

    def _connect(self, port_file: Path, timeout: float):
        from websockets.sync.client import connect

        port = self._devtools_port(port_file, timeout)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        return self.connection.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout))

    def _devtools_port(self, path: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode}")
            text = path.read_text() if path.exists() else ""
            if text.strip():
                return int(text.split()[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def send(self, method: str, timeout: float = 60, **params):
        """One DevTools command; events that arrive meanwhile are dropped."""
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        """Poll `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"still false after {timeout} s: {expression}")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def set_files(self, selector: str, *paths) -> None:
        """Choose files in an <input type=file>, as a person would: fires its change event."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def screenshot(self, path: Path) -> Path:
        """The whole page, not just the window."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.send("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        try:
            self.connection.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

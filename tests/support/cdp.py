"""Headless Chromium for UI tests, driven over the Chrome DevTools Protocol with aiohttp's websocket client.

- ``ensure_chromium()``: Debian's ``chromium`` (installed with apt-get when missing, as CI runs as root on a
  fresh Debian machine); fails with a message saying what to do when it cannot be installed.
- ``Chromium``: the browser process, headless, with a throw-away ``--user-data-dir``, the DevTools endpoint on
  127.0.0.1 only; stopped by PID (its process group).
- ``Page``: one tab. A synchronous API (``evaluate``, ``screenshot``, ...) over an asyncio loop that runs in a
  helper thread, so plain pytest tests can use it. Console messages and uncaught exceptions are recorded.

Flags: ``docs/comfyui-integration.md`` §8 (without the background-networking
flags Chromium keeps trying hosts this machine cannot reach).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.server import die_with_parent

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--no-default-browser-check",
    "--password-store=basic", "--hide-scrollbars",
]
APT_HINT = ("install Debian's Chromium yourself (`apt-get install -y chromium`, as root) or put a Chromium binary "
            "on PATH as `chromium` / set CHROMIUM=/path/to/chromium")


def ensure_chromium(log_path: Path | None = None) -> str:
    """Path of a Chromium binary; installs Debian's ``chromium`` package with apt-get when none is found."""
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"Chromium is not installed and this machine has no apt-get: {APT_HINT}")
    if os.geteuid() != 0:
        raise RuntimeError(f"Chromium is not installed and apt-get needs root (running as uid {os.geteuid()}): "
                           f"{APT_HINT}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    out = []
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "fonts-liberation"]):
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=900)
        out.append(f"$ {' '.join(cmd)}\n{proc.stdout}")
        if proc.returncode != 0:
            if log_path is not None:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log_path.write_text("\n".join(out))
            tail = "\n".join(proc.stdout.splitlines()[-15:])
            raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{tail}\n{APT_HINT}")
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("\n".join(out))
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError(f"apt-get installed `chromium` but no `chromium` is on PATH: {APT_HINT}")
    return path


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CDPError(RuntimeError):
    pass


class JSError(AssertionError):
    """A script evaluated in the page threw (the message carries the JS stack)."""


@dataclass
class ConsoleEntry:
    level: str          # "log" | "warning" | "error" | ... | "exception"
    text: str


class Chromium:
    """A headless Chromium process with the DevTools endpoint on 127.0.0.1:<port>."""

    def __init__(self, binary: str, log_path: Path, window: tuple[int, int] = (1400, 900)):
        self.binary = binary
        self.log_path = Path(log_path)
        self.window = window
        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="magicpose-chromium-")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Chromium":
        cmd = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
               f"--window-size={self.window[0]},{self.window[1]}",
               "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={self.port}", "about:blank"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Chromium exited with {self.proc.returncode} while starting; log:\n"
                                   f"{self.log_tail()}")
            try:
                self.version = self._get("/json/version")
                return self
            except (urllib.error.URLError, ConnectionError, OSError, json.JSONDecodeError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Chromium's DevTools endpoint did not answer within {timeout:.0f} s; log:\n"
                           f"{self.log_tail()}")

    def _get(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def new_page(self) -> "Page":
        target = self._get("/json/new?about:blank", method="PUT")
        return Page(target["webSocketDebuggerUrl"])

    def stop(self) -> None:
        """Ends Chromium's process group (the browser and its renderer/GPU/zygote children), by PID."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            try:  # children that outlived the browser process
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class Page:
    """One tab over CDP. Synchronous methods; the websocket lives on an event loop in a helper thread."""

    def __init__(self, ws_url: str):
        self.ws_url = ws_url
        self.console: list[ConsoleEntry] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cdp-loop", daemon=True)
        self._thread.start()
        self._next_id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._call(self._connect(), timeout=30)
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(domain)

    # --- plumbing -----------------------------------------------------------------------------------
    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.ws_url, max_msg_size=0)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        import aiohttp

        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(CDPError(f"{data['error'].get('message')}: {data['error'].get('data', '')}"))
                    else:
                        fut.set_result(data.get("result", {}))
            else:
                self._on_event(data.get("method", ""), data.get("params", {}))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(CDPError("the DevTools websocket closed"))

    def _on_event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(ConsoleEntry(params.get("type", "log"), text))
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            exc = d.get("exception", {})
            self.console.append(ConsoleEntry("exception", f"{d.get('text', '')} {exc.get('description', '')} "
                                                          f"({d.get('url', '')}:{d.get('lineNumber', '')})"))
        elif method == "Log.entryAdded":
            e = params.get("entry", {})
            self.console.append(ConsoleEntry(e.get("level", "log"), f"{e.get('text', '')} ({e.get('url', '')})"))

    async def _send(self, method: str, params: dict) -> dict:
        self._next_id += 1
        fut = self._loop.create_future()
        self._pending[self._next_id] = fut
        await self._ws.send_str(json.dumps({"id": self._next_id, "method": method, "params": params}))
        return await fut

    # --- API ----------------------------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self._call(self._send(method, params or {}), timeout)

    def navigate(self, url: str, timeout: float = 60) -> None:
        self.send("Page.navigate", {"url": url}, timeout=timeout)

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """Value of a JS expression (awaited when it is a promise), returned by value (JSON)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True,
                                             "timeout": int(timeout * 1000)}, timeout=timeout + 5)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            desc = d.get("exception", {}).get("description") or d.get("text")
            raise JSError(f"{desc}\n--- in ---\n{expression[:1500]}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, interval: float = 0.1) -> Any:
        """Polls until the expression is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression, timeout=10)
            except JSError:
                value = None
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"`{expression}` was not truthy within {timeout:.0f} s (last value {value!r})")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[ConsoleEntry]:
        return [e for e in self.console if e.level in ("error", "exception")]

    def close(self) -> None:
        async def _close():
            await self._ws.close()
            await self._session.close()
            self._reader.cancel()

        try:
            self._call(_close(), timeout=10)
        except Exception:  # noqa: BLE001 - best effort: the browser may already be gone
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

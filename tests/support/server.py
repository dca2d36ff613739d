"""A real ComfyUI server for tests: started on a free 127.0.0.1 port with this pack loaded, stopped by PID.

State lives in a throw-away base directory (custom_nodes/magicpose links to the repo, models/* link to
the factory checkpoints); the ComfyUI tree is never written to.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
PACK_DIR_NAME = "magicpose"


def die_with_parent() -> None:
    """In the server's child process: SIGTERM when the test process that started it dies (even by SIGKILL or a
    timeout), so an aborted run never leaves servers holding gigabytes of memory (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunResult:
    prompt_id: str
    status: str                      # "success" | "error" | "interrupted"
    history: dict
    events: list[dict] = field(default_factory=list)

    @property
    def outputs(self) -> dict:
        return self.history.get("outputs", {})

    def progress(self) -> list[tuple[str, int, int]]:
        return [(e["data"].get("node"), e["data"]["value"], e["data"]["max"]) for e in self.events
                if e.get("type") == "progress"]

    def error_message(self) -> str:
        for e in self.events:
            if e.get("type") == "execution_error":
                d = e["data"]
                return f"{d.get('exception_type')}: {d.get('exception_message')}"
        return ""


class ComfyServer:
    def __init__(self, comfy_path: Path, base_dir: Path, log_path: Path, extra_args: list[str] | None = None,
                 python: str | None = None, env: dict[str, str] | None = None):
        """``python``: the interpreter that runs ComfyUI (default: this one, e.g. the plain-install venv's);
        ``env``: extra environment variables for the server process."""
        self.python = python or sys.executable
        self.extra_env = dict(env or {})
        self.comfy_path = Path(comfy_path)
        self.base_dir = Path(base_dir)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None

    # --- lifecycle ----------------------------------------------------------------------------------
    def prepare_base(self, models: dict[str, list[Path]]) -> None:
        """Create the base directory: the pack linked into custom_nodes, model files linked per folder."""
        for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        for folder, files in models.items():
            d = self.base_dir / "models" / folder
            d.mkdir(parents=True, exist_ok=True)
            for f in files:
                dst = d / Path(f).name
                if not dst.exists():
                    dst.symlink_to(Path(f).resolve())

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--base-directory", str(self.base_dir),
               "--database-url", "sqlite:///:memory:", "--disable-api-nodes", "--use-pytorch-cross-attention",
               "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_DIR_NAME,
               "--preview-method", "latent2rgb", *self.extra_args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_path, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting; "
                                   f"log:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s; log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=5)     # a test server holds nothing worth a longer graceful stop
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # --- HTTP ---------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 30) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post_json(self, path: str, data) -> tuple[int, dict]:
        status, body = self.request("POST", path, json.dumps(data).encode(), {"Content-Type": "application/json"})
        try:
            return status, json.loads(body) if body else {}
        except json.JSONDecodeError:
            return status, {"raw": body.decode(errors="replace")}

    def upload_image(self, path: Path, subfolder: str = "") -> str:
        boundary = uuid.uuid4().hex
        data = Path(path).read_bytes()
        parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{Path(path).name}\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n".encode(), data, b"\r\n"]
        for k, v in (("overwrite", "true"), ("subfolder", subfolder), ("type", "input")):
            parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
        parts.append(f"--{boundary}--\r\n".encode())
        status, body = self.request("POST", "/upload/image", b"".join(parts),
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == 200, body
        info = json.loads(body)
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        status, body = self.request("GET", f"/view?{q}")
        assert status == 200, f"/view {filename}: {status}"
        return body

    def output_path(self, item: dict) -> Path:
        folder = {"output": "output", "temp": "temp", "input": "input"}[item.get("type", "output")]
        return self.base_dir / folder / item.get("subfolder", "") / item["filename"]

    # --- prompts ------------------------------------------------------------------------------------
    def queue(self, prompt: dict, client_id: str | None = None) -> tuple[int, dict]:
        body = {"prompt": prompt}
        if client_id:
            body["client_id"] = client_id
        return self.post_json("/prompt", body)

    def run(self, prompt: dict, timeout: float = 600,
            on_event: Callable[["ComfyServer", dict], None] | None = None) -> RunResult:
        """Queue a prompt and follow the websocket until it ends; returns history and all events."""
        return asyncio.run(self._run(prompt, timeout, on_event))

    async def _run(self, prompt: dict, timeout: float, on_event) -> RunResult:
        import aiohttp

        client_id = uuid.uuid4().hex
        events: list[dict] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}",
                                          max_msg_size=0) as ws:
                status, resp = await asyncio.to_thread(self.queue, prompt, client_id)
                if status != 200:
                    raise PromptRejected(status, resp)
                pid = resp["prompt_id"]
                end = {"execution_success": "success", "execution_error": "error",
                       "execution_interrupted": "interrupted"}
                result = None
                deadline = time.monotonic() + timeout
                while result is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"prompt {pid} did not finish in {timeout} s; log:\n{self.log_tail()}")
                    msg = await ws.receive(timeout=left)
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        kind = int.from_bytes(msg.data[:4], "big")
                        if kind == 3:  # BinaryEventTypes.TEXT: node id length, node id, text (progress text)
                            n = int.from_bytes(msg.data[4:8], "big")
                            events.append({"type": "progress_text", "node": msg.data[8:8 + n].decode(),
                                           "text": msg.data[8 + n:].decode(errors="replace")})
                        else:
                            events.append({"type": "binary_preview", "size": len(msg.data)})
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise RuntimeError(f"websocket closed: {msg.type}")
                    ev = json.loads(msg.data)
                    if ev.get("data", {}).get("prompt_id") not in (pid, None):
                        continue
                    events.append(ev)
                    if on_event is not None:
                        await asyncio.to_thread(on_event, self, ev)
                    if ev["type"] in end and ev["data"].get("prompt_id") == pid:
                        result = end[ev["type"]]
        history = {}
        for _ in range(100):
            history = self.get_json(f"/history/{pid}").get(pid, {})
            if history:
                break
            time.sleep(0.1)
        return RunResult(pid, result, history, events)


class PromptRejected(AssertionError):
    def __init__(self, status: int, body: dict):
        super().__init__(f"/prompt answered {status}: {json.dumps(body)[:2000]}")
        self.status = status
        self.body = body

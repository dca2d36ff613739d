"""`Client`: one ComfyUI server over its HTTP API (urllib): upload the inputs, queue a filled workflow, follow it
over the websocket (`follow`), stop it (targeted interrupt or queue delete, repeated until the server confirms),
download its outputs.

Routes of ComfyUI 0.30.0 `server.py`: /prompt, /upload/image, /object_info, /history, /view, /interrupt, /queue,
/system_stats, /ws, and /api/jobs/{id}/cancel where the server has the jobs API; see docs/comfyui-integration.md §3.
"""
from __future__ import annotations

import copy
import json
import logging
import mimetypes
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import ClientError, ServerUnreachable, UsageError
from .follow import RunEvent, close_events, follow, history_end, open_events
from .messages import PromptRejected, format_execution_error, format_prompt_error, shorten
from .outputs import Result, output_destinations, output_files
from .stop import StopGate
from .workflow import OUTPUT_TITLE, fill_workflow, load_workflow, node_label, resolve_node

log = logging.getLogger("MagicPose")

DEFAULT_SERVER = "http://127.0.0.1:8188"


def _is_loopback(host: str | None) -> bool:
    return host in ("localhost", "127.0.0.1", "::1") or bool(host and host.startswith("127."))


class Client:
    """A ComfyUI server at `server` (http[s]://host:port[/prefix]); `timeout` bounds each HTTP request."""

    def __init__(self, server: str = DEFAULT_SERVER, timeout: float = 30.0, client_id: str | None = None):
        server = server.strip()
        if "://" not in server:
            server = "http://" + server
        self.server = server.rstrip("/")
        parts = urllib.parse.urlsplit(self.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--server {server!r}: expected http://HOST:PORT")
        self.timeout = timeout
        self.client_id = client_id or uuid.uuid4().hex
        # Loopback servers never go through an environment proxy.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(parts.hostname) else []
        self._opener = urllib.request.build_opener(*handlers)
        self._schemas: dict[str, set[str] | None] = {}
        self._jobs_api: bool | None = None                  # POST /api/jobs/{id}/cancel answered (None: not tried)

    # --- HTTP -------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; ServerUnreachable when nothing answers."""
        req = urllib.request.Request(self.server + path, data=body, method=method, headers=headers or {})
        try:
            with self._opener.open(req, timeout=timeout or self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.server} ({reason}). Is it running? Start it "
                                    "(e.g. `make serve`) or pass --server http://HOST:PORT") from None

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise ClientError(f"GET {path} answered HTTP {status}: {shorten(body.decode(errors='replace'))}")
        return json.loads(body)

    def post_json(self, path: str, data: Any) -> tuple[int, Any]:
        status, body = self.request("POST", path, json.dumps(data).encode(), {"Content-Type": "application/json"})
        try:
            return status, (json.loads(body) if body else {})
        except json.JSONDecodeError:
            return status, {"error": body.decode(errors="replace")}

    def check_server(self) -> dict:
        """GET /system_stats: raises ServerUnreachable (exit 3) when nothing, or not ComfyUI, answers."""
        status, body = self.request("GET", "/system_stats")
        try:
            stats = json.loads(body) if status == 200 else None
        except json.JSONDecodeError:
            stats = None
        if not isinstance(stats, dict) or "system" not in stats:
            raise ServerUnreachable(f"{self.server} answered /system_stats with HTTP {status} but is not a "
                                    "ComfyUI server; check --server")
        return stats

    def upload(self, path: str | os.PathLike) -> str:
        """POST /upload/image (type=input; videos too): the value a loader's file input takes."""
        path = Path(path)
        boundary = uuid.uuid4().hex
        name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body = b"".join([
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode(), path.read_bytes(), b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'.encode(),
            f"--{boundary}--\r\n".encode()])
        status, resp = self.request("POST", "/upload/image", body,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                                    timeout=max(self.timeout, 300.0))
        if status != 200:
            raise ClientError(f"uploading {path} failed: HTTP {status}: {shorten(resp.decode(errors='replace'))}")
        info = json.loads(resp)
        log.info("uploaded %s as %s", path, info["name"])
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def schema_inputs(self, class_type: str) -> set[str] | None:
        """Input names of a node class from GET /object_info/{class} (None when the server does not know it)."""
        if class_type not in self._schemas:
            status, body = self.request("GET", "/object_info/" + urllib.parse.quote(class_type, safe=""))
            info = json.loads(body).get(class_type) if status == 200 else None
            names = None
            if isinstance(info, dict):
                spec = info.get("input") or {}
                names = {n for part in ("required", "optional") for n in (spec.get(part) or {})}
            self._schemas[class_type] = names
        return self._schemas[class_type]

    def interrupt(self, prompt_id: str) -> None:
        """Ask once to stop `prompt_id`: interrupt it if running, drop it from the queue if pending (targeted: another
        client's prompt is never touched). One request can be lost; `cancel` repeats it until the server confirms."""
        if self._jobs_api is not False:
            status, _ = self.post_json(f"/api/jobs/{urllib.parse.quote(prompt_id, safe='')}/cancel", {})
            if status == 200:
                self._jobs_api = True
                return
            if self._jobs_api is None and status in (404, 405):
                self._jobs_api = False                       # a server without the jobs API
        self.post_json("/interrupt", {"prompt_id": prompt_id})
        self.post_json("/queue", {"delete": [prompt_id]})

    def queue_ids(self) -> tuple[set[str], set[str]]:
        """(running, pending) prompt ids from GET /queue."""
        q = self.get_json("/queue")

        def ids(items: Any) -> set[str]:
            return {str(i[1]) for i in items or [] if isinstance(i, list) and len(i) > 1}

        return ids(q.get("queue_running")), ids(q.get("queue_pending"))

    def cancel(self, prompt_id: str, wait: float = 10.0, poll: float = 0.2) -> str | None:
        """Make sure `prompt_id` is neither queued nor running: `interrupt` it again and again until GET /queue lists
        it nowhere (ComfyUI clears its interrupt flag when a prompt starts, so an interrupt sent between the prompt
        leaving the queue and its start is lost). Returns "running" (it was interrupted), "pending" (deleted before
        it started) or "ended" (nothing to stop), or None when the server still lists it after `wait` seconds.
        ServerUnreachable when the server is gone."""
        end = time.monotonic() + wait
        seen: set[str] = set()
        while True:
            running, pending = self.queue_ids()
            where = "running" if prompt_id in running else "pending" if prompt_id in pending else None
            if where is None:
                return "running" if "running" in seen else "pending" if "pending" in seen else "ended"
            seen.add(where)
            if time.monotonic() > end:
                return None
            self.interrupt(prompt_id)
            time.sleep(poll)

    def history(self, prompt_id: str) -> dict:
        """The /history entry of a prompt ({} until it has finished)."""
        return self.get_json(f"/history/{prompt_id}").get(prompt_id) or {}

    def download(self, item: Mapping) -> bytes:
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        status, body = self.request("GET", f"/view?{query}", timeout=max(self.timeout, 300.0))
        if status != 200:
            raise ClientError(f"downloading {item['filename']} failed: HTTP {status}")
        return body

    # --- a whole run ------------------------------------------------------------------------------------
    def prepare(self, workflow: str | os.PathLike | Mapping, inputs: Mapping[str, str | os.PathLike] | None = None,
                sets: Sequence[str] | Mapping[str, Any] | None = None,
                out: str | os.PathLike | None = None) -> tuple[dict, str | None]:
        """The filled workflow and the Output node id. Usage errors come before any request; then the
        server is checked, the `inputs` files (title -> local path) uploaded and the inputs filled in."""
        wf = load_workflow(workflow)
        for title, path in (inputs or {}).items():
            if not Path(path).is_file():
                raise UsageError(f"input file for '{title}' not found: {path}")
        fill_workflow(copy.deepcopy(wf), {title: Path(p).name for title, p in (inputs or {}).items()}, sets)
        output_id = resolve_node(wf, OUTPUT_TITLE, "--out") if out is not None else None
        self.check_server()
        uploaded = {title: self.upload(path) for title, path in (inputs or {}).items()}
        return fill_workflow(wf, uploaded, sets, self.schema_inputs), output_id

    def run(self, workflow: str | os.PathLike | Mapping, inputs: Mapping[str, str | os.PathLike] | None = None,
            sets: Sequence[str] | Mapping[str, Any] | None = None, out: str | os.PathLike | None = None,
            on_event: Callable[[RunEvent], None] | None = None, timeout: float | None = None,
            interrupt_wait: float = 10.0) -> Result:
        """Upload, fill, queue, follow and download one workflow run.

        Args:
            workflow: API-format workflow (path or mapping); left unchanged.
            inputs: node title (or id) -> local file, uploaded into the node's image/file/video input.
            sets: "NODE.INPUT=VALUE" strings, or a mapping "NODE.INPUT" -> value.
            out: where the Output node's files go (see output_destinations); None: no download.
            on_event: called with every websocket event of this prompt (progress display).
            timeout: seconds the prompt may run before it is interrupted (ClientError); None: no limit.
            interrupt_wait: seconds to wait for the server to confirm an interrupt after Ctrl-C.
        Returns:
            Result with status success/error/interrupted. Usage, validation and connection problems raise
            UsageError / PromptRejected / ServerUnreachable; Ctrl-C interrupts the prompt on the server and
            re-raises KeyboardInterrupt.
        """
        wf, output_id = self.prepare(workflow, inputs, sets, out)
        return self.submit(wf, output_id, out, on_event, timeout, interrupt_wait)

    def submit(self, wf: Mapping, output_id: str | None = None, out: str | os.PathLike | None = None,
               on_event: Callable[[RunEvent], None] | None = None, timeout: float | None = None,
               interrupt_wait: float = 10.0, stop: threading.Event | StopGate | None = None) -> Result:
        """Queue a filled workflow (see `prepare`), follow it and download `output_id`'s files to `out`.

        The prompt is ours until it ends: on Ctrl-C, SIGTERM/SIGHUP (`Terminated`, see `install_signal_handlers`),
        a timeout, `stop` being set (another thread) or any other exception, it is interrupted if it runs, or
        deleted from the queue if it waits (targeted: never another client's prompt; `cancel`), before the
        exception goes on. A set `stop` returns an "interrupted" Result; with a `StopGate` the prompt is registered
        with the gate, is not posted at all once the gate is set, and a stopped prompt is left to the gate's owner
        to cancel.
        """
        gate = stop if isinstance(stop, StopGate) else None
        prompt_id = str(uuid.uuid4())                       # ours, so Ctrl-C can name it at any point
        t0 = time.monotonic()
        ws = open_events(self.server, self.client_id, self.timeout)
        posted = False
        try:
            try:
                if gate is not None and not gate.open_post(self.server, prompt_id):
                    return Result(prompt_id, "interrupted", error="stopped by the client before it was queued",
                                  seconds=time.monotonic() - t0)
                posted = True                               # from here on the prompt may exist on the server
                status = None
                try:
                    status, body = self.post_json("/prompt", {"prompt": wf, "client_id": self.client_id,
                                                              "prompt_id": prompt_id})
                finally:
                    if gate is not None:                    # an unanswered POST may have queued it: keep it
                        gate.close_post(self.server, prompt_id, queued=status != 400)
                if status == 400 or (status == 200 and body.get("error")):
                    posted = False                          # rejected: nothing was queued
                    raise PromptRejected(body, wf)
                if status != 200:
                    raise ClientError(f"POST /prompt answered HTTP {status}: {shorten(json.dumps(body))}")
                if body.get("node_errors"):                 # queued, but some outputs failed validation
                    blocked = {o for e in body["node_errors"].values() for o in (e or {}).get("dependent_outputs", [])}
                    if output_id is not None and output_id in blocked:
                        self.interrupt(prompt_id)
                        posted = False
                        raise PromptRejected(body, wf)
                    log.warning("%s", format_prompt_error(body, wf).replace("ComfyUI rejected the workflow",
                                                                             "some outputs will not run"))
                log.info("queued prompt %s on %s", prompt_id, self.server)
                deadline = None if timeout is None else t0 + timeout
                end, data = follow(ws, prompt_id, wf, on_event, deadline,
                                   lambda: history_end(self.history(prompt_id)), stop)
            except BaseException:
                # Ctrl-C, SIGTERM/SIGHUP, a lost server, a bug: the prompt must not outlive this client.
                if posted and self._cancel(prompt_id, interrupt_wait) and gate is not None:
                    gate.forget(self.server, prompt_id)
                raise
            if end == "stopped" and gate is not None:       # the gate's owner stops every prompt it registered
                return Result(prompt_id, "interrupted", error="stopped by the client", seconds=time.monotonic() - t0)
            if end in ("timeout", "stopped"):
                if self._cancel(prompt_id, interrupt_wait) and gate is not None:
                    gate.forget(self.server, prompt_id)
                if end == "timeout":
                    raise ClientError(f"prompt {prompt_id} did not finish within {timeout:g} s; it was interrupted")
                return Result(prompt_id, "interrupted", error="stopped by the client; the prompt was interrupted or "
                              "removed from the queue", seconds=time.monotonic() - t0)
        finally:
            close_events(ws)
        if gate is not None:
            gate.forget(self.server, prompt_id)             # it ended on the server
        hist = self._wait_history(prompt_id) if end == "success" else {}
        outputs = hist.get("outputs", {}) if hist else {}
        if end == "error":
            return Result(prompt_id, "error", outputs=outputs, error=format_execution_error(data, wf),
                          seconds=time.monotonic() - t0)
        if end == "interrupted":
            return Result(prompt_id, "interrupted", outputs=outputs,
                          error=f"interrupted on the server at {node_label(wf, data.get('node_id'))}",
                          seconds=time.monotonic() - t0)
        files = self._save_outputs(wf, output_id, outputs, out) if out is not None else ()
        return Result(prompt_id, "success", files=tuple(files), outputs=outputs, seconds=time.monotonic() - t0)

    def _wait_history(self, prompt_id: str, wait: float = 30.0) -> dict:
        """/history is written just after execution_success is sent: poll briefly."""
        end = time.monotonic() + wait
        while True:
            hist = self.history(prompt_id)
            if hist or time.monotonic() > end:
                return hist
            time.sleep(0.1)

    def _cancel(self, prompt_id: str, wait: float) -> bool:
        """`cancel` our prompt and say what happened; True when the server confirmed that it is neither queued nor
        running. Never raises a ClientError: it runs while another exception is on its way."""
        try:
            where = self.cancel(prompt_id, wait)
        except Exception as e:                              # noqa: BLE001 - cleanup while another exception is on its way
            log.warning("could not confirm that prompt %s stopped on %s: %s", prompt_id, self.server, e)
            return False
        if where is None:
            log.warning("prompt %s: %s still lists it %g s after the stop requests", prompt_id, self.server, wait)
            return False
        log.warning({"running": "prompt %s interrupted on %s", "pending": "prompt %s removed from the queue of %s "
                     "before it started", "ended": "prompt %s had already ended on %s"}[where], prompt_id, self.server)
        return True

    def _save_outputs(self, wf: Mapping, output_id: str, outputs: Mapping, out: str | os.PathLike) -> list[Path]:
        files = output_files(outputs.get(output_id) or {})
        if not files:
            raise ClientError(f"{node_label(wf, output_id)} produced no files to download; the node titled "
                              f"'{OUTPUT_TITLE}' must save files (SaveImage, SaveVideo, ...). Outputs by node: "
                              f"{shorten(json.dumps(outputs), 200)}")
        paths = output_destinations(out, files)
        for item, path in zip(files, paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.download(item))
            log.info("saved %s", path)
        return paths


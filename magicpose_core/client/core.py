"""Headless client for ComfyUI's HTTP API: run an API-format workflow from a shell or from Python.

    python -m magicpose_core.client run workflows/api/video_dance_retarget_api.json \\
        --reference ref.png --driving dance.mp4 --out out.mp4 \\
        [--server http://127.0.0.1:8188] [--set "Sampler.steps=20"] [--set "7.seed=3"]

Standard library only (urllib for HTTP, `magicpose_core.client.websocket` for `/ws`): it runs on a machine with
Python and this package, without ComfyUI, torch or aiohttp.

Title convention. A script fills in the nodes whose `_meta.title` (the title shown in ComfyUI; right-click >
Title, then "Export (API)") is exactly:
- `Reference`      --reference FILE: FILE is uploaded and set as the node's `image` input (LoadImage);
- `Driving video`  --driving FILE: FILE is uploaded and set as the node's `file` input (core LoadVideo;
                   `video` or `image` are used when the node has those instead);
- `Driving poses` or `Poses` (optional)  --poses FILE: uploaded and set the same way;
- `Output`         the node whose files (SaveImage `images`, SaveVideo/SaveAnimated* `images`, VHS `gifs`, any
                   list of {filename, subfolder, type} in its output dict) are downloaded to --out.
Any other title can receive a file with `--file "Title=PATH"`. Any input of any node can be set with
`--set "NODE.INPUT=VALUE"`, NODE being a node id or an exact title; VALUE is read as JSON when it parses
(`20`, `7.5`, `true`, `"text"`, `null`), else as a plain string; an input that currently holds a string stays a
string (`--set "Output.filename_prefix=007"`), and an int given to a float input becomes a float.
An unknown title or input is an error that lists what the workflow (or the server's node schema) has.

Outputs. One file: written to --out. Several files: written as `<stem>_00001<ext>`, `<stem>_00002<ext>`, ...
next to --out (each with the extension of the server file). If --out is an existing directory or ends with
"/", every file keeps its server name inside it. Without --out nothing is downloaded; the server-side names
are printed.

Exit codes: 0 success; 1 execution error (the server ran the prompt and a node failed, or downloading failed);
2 usage or validation error (bad arguments, unknown title or input, `node_errors` from POST /prompt);
3 cannot reach the server; 130 interrupted (Ctrl-C, or the prompt was interrupted on the server); 143 / 129
SIGTERM / SIGHUP. The client owns its prompt: on Ctrl-C, SIGTERM, SIGHUP, a --timeout or any unexpected error it
interrupts the prompt if it is running or deletes it if it is queued (POST /api/jobs/{id}/cancel; on servers
without the jobs API POST /interrupt {"prompt_id": id} and POST /queue {"delete": [id]}), never touching other
clients' prompts, and repeats that until GET /queue no longer lists it (bounded): ComfyUI clears its interrupt
flag when a prompt starts, so an interrupt that lands between the prompt leaving the queue and its start is lost.
A second Ctrl-C or signal during that stop is ignored with a message, so it cannot leave a prompt running.

Several servers: `--server A --server B ...` splits the driving video into contiguous frame ranges, renders them
on whichever server is idle and merges them into --out with the driver's fps and sound; the result equals a
single-server render (magicpose_core.client.split; options --range-frames, --parts-dir, --resume, --keep-parts).

Python API (the CLI wraps it):

    result = Client("http://127.0.0.1:8188").run("wf.json", inputs={"Reference": "ref.png"},
                                                 sets=["Sampler.steps=20"], out="out.mp4")
    result.status, result.files, result.exit_code

Protocol facts follow ComfyUI 0.30.0 `server.py` (routes /prompt, /upload/image, /object_info, /history,
/view, /interrupt, /queue, /ws) and `execution.py` (`validate_prompt`'s `error`/`node_errors` layout, the
websocket events execution_start / executing / progress / executed / execution_success / execution_error /
execution_interrupted); see docs/comfyui-integration.md §3.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import mimetypes
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

from .websocket import WebSocket, WebSocketError

log = logging.getLogger("MagicPose")

DEFAULT_SERVER = "http://127.0.0.1:8188"
# The title convention (module docstring).
REFERENCE_TITLE = "Reference"
DRIVING_VIDEO_TITLE = "Driving video"
POSES_TITLES = ("Driving poses", "Poses")
OUTPUT_TITLE = "Output"
FILE_INPUTS = ("image", "file", "video")     # upload-widget input names, in the order tried
# Exit codes (module docstring).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
END_EVENTS = {"execution_success": "success", "execution_error": "error", "execution_interrupted": "interrupted"}
MAX_DETAIL = 300                              # characters of one validation message kept (value lists are long)


# --- errors ----------------------------------------------------------------------------------------------

class ClientError(RuntimeError):
    """A failure the CLI reports with `exit_code`."""

    exit_code = EXIT_FAILED


class UsageError(ClientError):
    """Bad arguments or a workflow that does not fit them (unknown title, input or file)."""

    exit_code = EXIT_USAGE


class PromptRejected(UsageError):
    """POST /prompt answered 400: the message lists every node error readably."""

    def __init__(self, body: Mapping, workflow: Mapping | None = None):
        super().__init__(format_prompt_error(body, workflow))
        self.body = dict(body)
        self.node_errors = dict(body.get("node_errors") or {})


class ServerUnreachable(ClientError):
    """No ComfyUI answered at the given address."""

    exit_code = EXIT_UNREACHABLE


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (a CI job timing out, a closed terminal): handled like Ctrl-C, so the prompt is
    stopped on the server; the CLI then exits with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def install_signal_handlers() -> Callable[[], None]:
    """Make Ctrl-C (SIGINT) raise KeyboardInterrupt and SIGTERM / SIGHUP raise `Terminated` in the main thread, the
    first time; every later signal is logged and ignored while the prompts are being stopped, so a second Ctrl-C
    cannot cut the stop short and leave a prompt of ours running on a server (the stop itself is bounded).
    Returns a function that restores the previous handlers."""
    fired: list[int] = []

    def handler(signum, _frame):
        if fired:
            log.warning("%s again: still stopping our prompts on the server(s), for a bounded time (Ctrl-\\ quits "
                        "at once and may leave them running)",
                        "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)
            return
        fired.append(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    names = [n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), handler) for n in names}

    def restore() -> None:
        for n, h in previous.items():
            signal.signal(getattr(signal, n), h)

    return restore


class StopGate:
    """A stop signal shared by threads that queue prompts (split_render), which no new prompt can slip past.

    `Client.submit(stop=gate)` registers its prompt id before POST /prompt (`open_post`, refused once the gate is
    set) and reports when the POST has returned (`close_post`). `set()` refuses every later registration and waits
    for the POSTs in flight, so the prompts it returns are every prompt of ours that can be on a server; the owner
    stops them (`Client.cancel`), and `submit` leaves a stopped prompt to it. Quacks like `threading.Event` for
    `is_set()`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._set = False
        self._posting = 0
        self._prompts: dict[str, set[str]] = {}          # server -> our prompt ids that may be queued or running

    def is_set(self) -> bool:
        return self._set

    def open_post(self, server: str, prompt_id: str) -> bool:
        """Register a prompt about to be posted; False (do not post) once the gate is set."""
        with self._cond:
            if self._set:
                return False
            self._posting += 1
            self._prompts.setdefault(server, set()).add(prompt_id)
            return True

    def close_post(self, server: str, prompt_id: str, queued: bool) -> None:
        with self._cond:
            self._posting -= 1
            if not queued:
                self._prompts.get(server, set()).discard(prompt_id)
            self._cond.notify_all()

    def forget(self, server: str, prompt_id: str) -> None:
        """The prompt has ended (or was confirmed stopped): nothing left to stop."""
        with self._cond:
            self._prompts.get(server, set()).discard(prompt_id)

    def set(self, wait: float = 30.0) -> dict[str, set[str]]:
        """Stop: no prompt is posted from now on. Waits (at most `wait` s) for the POSTs in flight and returns
        server -> our prompt ids that may still be queued or running there."""
        with self._cond:
            self._set = True
            self._cond.wait_for(lambda: self._posting == 0, timeout=wait)
            return {server: set(ids) for server, ids in self._prompts.items() if ids}


# --- workflow editing (pure) -----------------------------------------------------------------------------

def load_workflow(source: str | os.PathLike | Mapping) -> dict:
    """An API-format workflow from a path or a mapping (deep-copied). UI-format files are refused with a hint."""
    if isinstance(source, Mapping):
        wf = copy.deepcopy(dict(source))
        where = "the workflow"
    else:
        where = str(source)
        try:
            wf = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"workflow file not found: {source}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read the workflow {source}: {e}") from None
    if isinstance(wf, dict) and isinstance(wf.get("nodes"), list) and "links" in wf:
        raise UsageError(f"{where} is a UI-format workflow; the client needs the API format: in ComfyUI use "
                         "Workflow > Export (API), or take the twin under workflows/api/")
    if isinstance(wf, dict) and isinstance(wf.get("prompt"), dict) and "class_type" not in wf.get("prompt", {}):
        wf = wf["prompt"]                                  # a saved POST /prompt body
    if not isinstance(wf, dict) or not wf:
        raise UsageError(f"{where} is not an API-format workflow (expected a JSON object of nodes)")
    for nid, node in wf.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs", {}), dict):
            raise UsageError(f"{where}: node {nid} is not an API-format node ({{'class_type', 'inputs'}})")
        node.setdefault("inputs", {})
    return wf


def node_title(workflow: Mapping, node_id: str) -> str | None:
    node = workflow.get(str(node_id))
    meta = node.get("_meta") if isinstance(node, Mapping) else None
    return meta.get("title") if isinstance(meta, Mapping) else None


def node_label(workflow: Mapping | None, node_id: Any, class_type: str | None = None) -> str:
    """`node 12 "Sampler" (MagicPoseSample)`: how every message names a node."""
    node = workflow.get(str(node_id)) if workflow else None
    if isinstance(node, Mapping):
        class_type = node.get("class_type") or class_type
    title = node_title(workflow, node_id) if workflow else None
    text = f"node {node_id}"
    if title:
        text += f' "{title}"'
    return text + (f" ({class_type})" if class_type else "")


def titles_present(workflow: Mapping) -> str:
    names = [f"'{t}'" for t in (node_title(workflow, n) for n in workflow) if t]
    return ", ".join(dict.fromkeys(names)) or "(no node has a title)"


def find_nodes(workflow: Mapping, ref: str) -> list[str]:
    """Node ids whose id or exact `_meta.title` is `ref`."""
    if ref in workflow:
        return [ref]
    return [n for n in workflow if node_title(workflow, n) == ref]


def resolve_node(workflow: Mapping, ref: str, purpose: str) -> str:
    """The one node named `ref` (id or title); UsageError naming the titles present otherwise."""
    ids = find_nodes(workflow, ref)
    if not ids:
        raise UsageError(f"{purpose}: no node with id or title '{ref}' in the workflow. Titles present: "
                         f"{titles_present(workflow)}. Set the title in ComfyUI (right-click > Title) and export "
                         f"the workflow again (Workflow > Export (API)).")
    if len(ids) > 1:
        raise UsageError(f"{purpose}: {len(ids)} nodes are titled '{ref}' (ids {', '.join(ids)}); titles used "
                         "by the client must be unique, or name the node by its id")
    return ids[0]


def file_input_name(workflow: Mapping, node_id: str) -> str:
    """The upload input of a node: the first of FILE_INPUTS it has."""
    inputs = workflow[node_id]["inputs"]
    for name in FILE_INPUTS:
        if name in inputs:
            return name
    raise UsageError(f"{node_label(workflow, node_id)} has none of the inputs {', '.join(FILE_INPUTS)}, so a file "
                     f"cannot be filled in; use a LoadImage/LoadVideo node with that title")


def parse_set(text: str) -> tuple[str, str]:
    """`"NODE.INPUT=VALUE"` -> (`"NODE.INPUT"`, `"VALUE"`), VALUE still raw."""
    target, sep, raw = text.partition("=")
    target = target.strip()
    if not sep or "." not in target or target.startswith(".") or target.endswith("."):
        raise UsageError(f"--set {text!r}: expected NODE.INPUT=VALUE, NODE being a node id or title "
                         "(e.g. --set \"Sampler.steps=20\")")
    return target, raw


def split_target(workflow: Mapping, target: str) -> tuple[str, str]:
    """`"Title or id.input"` -> (node id, input name); the leftmost split whose left part names a node wins."""
    for i, ch in enumerate(target):
        if ch == "." and 0 < i < len(target) - 1 and find_nodes(workflow, target[:i]):
            return resolve_node(workflow, target[:i], f"--set {target}"), target[i + 1:]
    node_ref = target.rsplit(".", 1)[0]
    return resolve_node(workflow, node_ref, f"--set {target}"), ""     # raises with the titles present


def coerce_value(raw: str, current: Any = None) -> Any:
    """A --set value: JSON when it parses, else the raw string; typed after the input's current value."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(current, str) and not isinstance(value, str):
        return raw                       # a string input stays verbatim: "007", "1e3", "true"
    if isinstance(current, float) and type(value) is int:
        return float(value)
    return value


def apply_sets(workflow: dict, sets: Sequence[str] | Mapping[str, Any] | None,
               schema_inputs: Callable[[str], set[str] | None] | None = None) -> list[tuple[str, str, Any]]:
    """Apply --set assignments in place; returns (node id, input, value) per assignment.

    `sets` is a list of "NODE.INPUT=VALUE" strings (values coerced) or a mapping "NODE.INPUT" -> Python value.
    `schema_inputs(class_type)` gives the inputs the server knows for a class (None: unknown); an input that
    is neither in the workflow nor in the schema is an error.
    """
    if not sets:
        return []
    items = [(k, v, False) for k, v in sets.items()] if isinstance(sets, Mapping) else \
        [(*parse_set(s), True) for s in sets]
    done = []
    for target, value, raw in items:
        node_id, name = split_target(workflow, target)
        if not name:
            raise UsageError(f"--set {target}: no input name after the node")
        inputs = workflow[node_id]["inputs"]
        if name not in inputs and schema_inputs is not None:
            known = schema_inputs(workflow[node_id].get("class_type", ""))
            if known is not None and name not in known and name.split(".")[0] not in known:
                raise UsageError(f"--set {target}: {node_label(workflow, node_id)} has no input '{name}'. "
                                 f"Its inputs: {', '.join(sorted(known)) or '(none)'}")
        new = coerce_value(value, inputs.get(name)) if raw else value
        inputs[name] = new
        done.append((node_id, name, new))
    return done


def fill_workflow(workflow: dict, files: Mapping[str, str], sets: Sequence[str] | Mapping[str, Any] | None = None,
                  schema_inputs: Callable[[str], set[str] | None] | None = None) -> dict:
    """Fill `workflow` in place: `files` maps a node title (or id) to an uploaded file name, set as the node's
    image/file/video input; then `sets` are applied (they win). Returns the workflow."""
    targets = []
    for title, name in files.items():
        node_id = resolve_node(workflow, title, f"input file for '{title}'")
        targets.append((node_id, file_input_name(workflow, node_id), name))
    for node_id, input_name, name in targets:
        workflow[node_id]["inputs"][input_name] = name
    apply_sets(workflow, sets, schema_inputs)
    return workflow


# --- error formatting ------------------------------------------------------------------------------------

def shorten(text: str, limit: int = MAX_DETAIL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def format_validation_error(err: Mapping) -> str:
    """One `validate_inputs` reason -> `input 'steps': Value 0 smaller than min of 1`."""
    message = str(err.get("message") or err.get("type") or "invalid").strip()
    details = str(err.get("details") or "").strip()
    name = (err.get("extra_info") or {}).get("input_name")
    if name:
        short = str(name).split(".")[-1]
        for prefix in (name, short):
            for sep in (" - ", ": ", ", "):
                if details.startswith(f"{prefix}{sep}"):
                    details = details[len(prefix) + len(sep):]
                    break
        if details in (name, short):
            details = ""
    if err.get("type") == "custom_validation_failed" and details:
        text = details                               # the node's own message says it best
    else:
        text = message + (f": {details}" if details else "")
    return (f"input '{name}': " if name else "") + shorten(text)


def format_node_errors(node_errors: Mapping, workflow: Mapping | None = None) -> list[str]:
    """`node_errors` of a 400 from /prompt -> one line per reason, each naming node, title, class and input."""
    lines = []
    for nid, entry in node_errors.items():
        label = node_label(workflow, nid, (entry or {}).get("class_type"))
        reasons = (entry or {}).get("errors") or [{"message": "invalid"}]
        lines += [f"{label}: {format_validation_error(r)}" for r in reasons]
    return lines


HINTS = {
    "missing_node_type": "install the custom node pack that provides it, or fix class_type in the workflow",
    "prompt_no_outputs": "the workflow needs an output node, e.g. SaveImage titled 'Output'",
    "invalid_prompt_id": "the prompt id must be a lowercase UUID",
}


def format_prompt_error(body: Mapping, workflow: Mapping | None = None) -> str:
    """The readable text of a 400 from POST /prompt (`{"error": {...}, "node_errors": {...}}`)."""
    err = body.get("error")
    node_errors = body.get("node_errors") or {}
    if isinstance(err, Mapping):
        head = str(err.get("message") or err.get("type") or "invalid prompt")
        extra = err.get("extra_info") or {}
        if err.get("type") == "missing_node_type" and extra.get("class_type"):
            head = f"node type '{extra['class_type']}' is not installed on the server"
        if extra.get("node_id") is not None and not node_errors:
            head = f"{node_label(workflow, extra['node_id'], extra.get('class_type'))}: {head}"
        hint = HINTS.get(str(err.get("type")))
        if hint:
            head += f" ({hint})"
    else:
        head = str(err or "invalid prompt")
    lines = [f"ComfyUI rejected the workflow: {head}"]
    if node_errors:
        lines += [f"  {line}" for line in format_node_errors(node_errors, workflow)]
    elif isinstance(err, Mapping) and err.get("details") and err.get("type") != "missing_node_type":
        lines += [f"  {shorten(d)}" for d in str(err["details"]).splitlines() if d.strip()]
    return "\n".join(lines)


def format_execution_error(data: Mapping, workflow: Mapping | None = None) -> str:
    """An `execution_error` event -> `node 3 "Sampler" (MagicPoseSample): ValueError: message`."""
    label = node_label(workflow, data.get("node_id"), data.get("node_type"))
    kind = data.get("exception_type") or "error"
    return f"{label}: {kind}: {str(data.get('exception_message') or '').strip()}"


# --- outputs ---------------------------------------------------------------------------------------------

def output_files(node_output: Mapping) -> list[dict]:
    """Every {filename, subfolder, type} listed in one node's history outputs (images, gifs, videos, ...)."""
    files, seen = [], set()
    for value in node_output.values():
        if not isinstance(value, list):
            continue
        for item in value:
            if isinstance(item, Mapping) and item.get("filename"):
                key = (item.get("type", "output"), item.get("subfolder", ""), item["filename"])
                if key not in seen:
                    seen.add(key)
                    files.append(dict(item))
    return files


def output_destinations(out: str | os.PathLike, files: Sequence[Mapping]) -> list[Path]:
    """Where each downloaded file goes (module docstring: one file -> out; several -> numbered; dir -> names)."""
    as_dir = str(out).endswith(("/", os.sep)) or Path(out).is_dir()
    out = Path(out)
    if as_dir:
        return [out / Path(f["filename"]).name for f in files]
    if len(files) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i:05d}{Path(f['filename']).suffix or out.suffix}")
            for i, f in enumerate(files, 1)]


# --- the client ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunEvent:
    """One websocket event of our prompt, with the node it concerns named readably ("" when none)."""

    type: str
    data: dict
    label: str = ""


@dataclass(frozen=True)
class Result:
    prompt_id: str
    status: str                                   # "success" | "error" | "interrupted"
    files: tuple[Path, ...] = ()                  # downloaded files
    outputs: dict = field(default_factory=dict)   # /history outputs by node id
    error: str = ""                               # readable execution error
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def exit_code(self) -> int:
        return {"success": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(self.status, EXIT_FAILED)


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
        ws_url = urllib.parse.urlsplit(self.server)._replace(
            scheme="wss" if self.server.startswith("https") else "ws", query=f"clientId={self.client_id}")
        ws_url = ws_url._replace(path=ws_url.path + "/ws").geturl()
        try:
            ws = WebSocket.connect(ws_url, timeout=self.timeout)
        except (OSError, WebSocketError) as e:
            raise ServerUnreachable(f"cannot open the websocket {ws_url} ({e}); check --server") from None
        state = {"started": False, "posted": False}
        try:
            try:
                if gate is not None and not gate.open_post(self.server, prompt_id):
                    return Result(prompt_id, "interrupted", error="stopped by the client before it was queued",
                                  seconds=time.monotonic() - t0)
                state["posted"] = True                      # from here on the prompt may exist on the server
                status = None
                try:
                    status, body = self.post_json("/prompt", {"prompt": wf, "client_id": self.client_id,
                                                              "prompt_id": prompt_id})
                finally:
                    if gate is not None:                    # an unanswered POST may have queued it: keep it
                        gate.close_post(self.server, prompt_id, queued=status != 400)
                if status == 400 or (status == 200 and body.get("error")):
                    state["posted"] = False                 # rejected: nothing was queued
                    raise PromptRejected(body, wf)
                if status != 200:
                    raise ClientError(f"POST /prompt answered HTTP {status}: {shorten(json.dumps(body))}")
                if body.get("node_errors"):                 # queued, but some outputs failed validation
                    blocked = {o for e in body["node_errors"].values() for o in (e or {}).get("dependent_outputs", [])}
                    if output_id is not None and output_id in blocked:
                        self.interrupt(prompt_id)
                        state["posted"] = False
                        raise PromptRejected(body, wf)
                    log.warning("%s", format_prompt_error(body, wf).replace("ComfyUI rejected the workflow",
                                                                             "some outputs will not run"))
                log.info("queued prompt %s on %s", prompt_id, self.server)
                deadline = None if timeout is None else t0 + timeout
                end, data = self._follow(ws, prompt_id, wf, on_event, deadline, state, stop)
            except BaseException:
                # Ctrl-C, SIGTERM/SIGHUP, a lost server, a bug: the prompt must not outlive this client.
                if state["posted"] and self._cancel(prompt_id, interrupt_wait) and gate is not None:
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
            ws.close()
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

    def _follow(self, ws: WebSocket, prompt_id: str, wf: Mapping, on_event, deadline: float | None,
                state: dict, stop: threading.Event | None = None) -> tuple[str, dict]:
        """Read events until ours ends: ("success" | "error" | "interrupted" | "timeout" | "stopped", data)."""
        quiet_since = time.monotonic()
        while True:
            if deadline is not None and time.monotonic() > deadline:
                return "timeout", {}
            if stop is not None and stop.is_set():
                return "stopped", {}
            try:
                msg = ws.recv(timeout=0.5)
            except TimeoutError:
                # No event for a while: the end may have been missed (reconnects); /history knows.
                if time.monotonic() - quiet_since > 5.0:
                    quiet_since = time.monotonic()
                    found = self._history_end(prompt_id)
                    if found:
                        return found
                continue
            except (OSError, WebSocketError) as e:
                log.warning("websocket lost (%s); polling /history for prompt %s", e, prompt_id)
                return self._poll_end(prompt_id, deadline, stop)
            quiet_since = time.monotonic()
            if not msg.is_text:
                continue                                     # binary frames are previews
            try:
                ev = json.loads(msg.text)
            except json.JSONDecodeError:
                continue
            kind, data = ev.get("type", ""), ev.get("data") or {}
            if not isinstance(data, dict) or data.get("prompt_id", prompt_id) != prompt_id:
                continue
            if kind == "execution_start":
                state["started"] = True
            if on_event is not None and kind != "status":
                node = data.get("display_node") or data.get("node") or data.get("node_id")
                on_event(RunEvent(kind, data, node_label(wf, node) if node is not None else ""))
            if kind in END_EVENTS and data.get("prompt_id") == prompt_id:
                return END_EVENTS[kind], data

    def _history_end(self, prompt_id: str) -> tuple[str, dict] | None:
        hist = self.history(prompt_id)                       # present only once the prompt has finished
        if not hist:
            return None
        status = hist.get("status") or {}
        for kind, data in status.get("messages") or []:
            if kind in ("execution_error", "execution_interrupted"):
                return END_EVENTS[kind], data
        return ("success", {}) if status.get("status_str", "success") == "success" else ("error", {})

    def _poll_end(self, prompt_id: str, deadline: float | None,
                  stop: threading.Event | None = None) -> tuple[str, dict]:
        while deadline is None or time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                return "stopped", {}
            found = self._history_end(prompt_id)
            if found:
                return found
            time.sleep(0.5)
        return "timeout", {}

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


# --- command line ----------------------------------------------------------------------------------------

class ProgressPrinter:
    """Shows the run on `stream`: a line per node, a progress bar per `progress` event (value/max).

    On a terminal the bar redraws one line; otherwise a line is printed at the first tick, every 10 % and
    the last tick.
    """

    def __init__(self, stream: IO[str] | None = None, width: int = 24):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self._open_bar = False
        self._last: dict[str, int] = {}

    def _line(self, text: str) -> None:
        if self._open_bar:
            self.stream.write("\n")
            self._open_bar = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, ev: RunEvent) -> None:
        d = ev.data
        if ev.type == "execution_start":
            self._line(f"started prompt {d.get('prompt_id', '')}")
        elif ev.type == "execution_cached" and d.get("nodes"):
            self._line(f"cached: {len(d['nodes'])} node(s)")
        elif ev.type == "executing" and d.get("node") is not None:
            self._line(f"running {ev.label}")
        elif ev.type == "progress":
            self._bar(ev.label, int(d.get("value", 0)), max(int(d.get("max", 1)), 1))

    def _bar(self, label: str, value: int, total: int) -> None:
        filled = min(self.width, self.width * value // total)
        text = f"  {label} [{'#' * filled}{'-' * (self.width - filled)}] {value}/{total} {100 * value // total:3d}%"
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._open_bar = value < total
            if not self._open_bar:
                self.stream.write("\n")
            self.stream.flush()
            return
        decile = 10 * value // total
        if value in (1, total) or decile != self._last.get(label):
            self._last[label] = decile
            self._line(text)


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("Title convention.")[1].split("Python API")[0]
    parser = argparse.ArgumentParser(prog="python -m magicpose_core.client",
                                     description="Run a ComfyUI API-format workflow headlessly.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Title convention." + doc)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="upload inputs, run the workflow, download its Output",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog="Title convention." + doc)
    run.add_argument("workflow", help="API-format workflow JSON (e.g. workflows/api/*.json)")
    run.add_argument("--server", action="append", default=[],
                     help=f"ComfyUI address (default: $COMFYUI_URL or {DEFAULT_SERVER}); give it several times to "
                          "split the driving video into frame ranges over several servers")
    run.add_argument("--reference", metavar="FILE", help=f"image for the node titled '{REFERENCE_TITLE}'")
    run.add_argument("--driving", metavar="FILE", help=f"video for the node titled '{DRIVING_VIDEO_TITLE}'")
    run.add_argument("--poses", metavar="FILE", help=f"file for the node titled '{POSES_TITLES[0]}' or "
                                                      f"'{POSES_TITLES[1]}'")
    run.add_argument("--file", metavar="TITLE=PATH", action="append", default=[],
                     help="upload PATH into the node titled TITLE (repeatable)")
    run.add_argument("--set", metavar="NODE.INPUT=VALUE", action="append", default=[], dest="sets",
                     help="set an input; NODE is a node id or title; VALUE is JSON or a string (repeatable)")
    run.add_argument("--out", metavar="PATH", help="where the Output node's files go (see below)")
    run.add_argument("--timeout", type=float, help="interrupt the prompt after this many seconds (exit 1)")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    split = run.add_argument_group("several servers (magicpose_core.client.split)")
    split.add_argument("--range-frames", type=int, metavar="N",
                       help="frames per range (default: about 4 ranges per server, at least 16 frames each)")
    split.add_argument("--parts-dir", metavar="DIR", help="where finished ranges are kept (default: OUT.parts/)")
    split.add_argument("--resume", action="store_true",
                       help="render only the ranges missing from the parts folder of an earlier, failed run")
    split.add_argument("--keep-parts", action="store_true", help="keep the parts folder after the merge")
    return parser


def _inputs_from_args(args: argparse.Namespace, workflow: Mapping) -> dict[str, str]:
    inputs = {}
    if args.reference:
        inputs[REFERENCE_TITLE] = args.reference
    if args.driving:
        inputs[DRIVING_VIDEO_TITLE] = args.driving
    if args.poses:
        present = [t for t in POSES_TITLES if find_nodes(workflow, t)]
        inputs[present[0] if present else POSES_TITLES[0]] = args.poses
    for item in args.file:
        title, sep, path = item.partition("=")
        if not sep or not title or not path:
            raise UsageError(f"--file {item!r}: expected TITLE=PATH")
        inputs[title] = path
    return inputs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)              # bad arguments exit 2 (argparse)
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("magicpose: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    servers = args.server or [os.environ.get("COMFYUI_URL", DEFAULT_SERVER)]
    restore = install_signal_handlers()
    try:
        workflow = load_workflow(args.workflow)
        inputs = _inputs_from_args(args, workflow)
        if len(servers) > 1 or args.range_frames is not None or args.resume or args.parts_dir:
            return _main_split(args, servers, workflow, inputs)
        client = Client(servers[0])
        result = client.run(workflow, inputs=inputs, sets=args.sets, out=args.out,
                            on_event=None if args.quiet else ProgressPrinter(sys.stderr), timeout=args.timeout)
    except ClientError as e:
        kind = {EXIT_USAGE: "error", EXIT_UNREACHABLE: "error"}.get(e.exit_code, "failed")
        print(f"{kind}: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated as e:
        print(f"{e}: the prompt was interrupted on the server or removed from its queue", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): the prompt was interrupted on the server or removed from its queue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        restore()
    if result.status == "error":
        print(f"execution error in {result.error}", file=sys.stderr)
    elif result.status == "interrupted":
        print(f"interrupted: {result.error}", file=sys.stderr)
    else:
        for path in result.files:
            print(path)
        if args.out is None:                                # nothing downloaded: name the server files
            for node_out in result.outputs.values():
                for item in output_files(node_out):
                    parts = (item.get("type", "output"), item.get("subfolder"), item["filename"])
                    print("/".join(p for p in parts if p))
        print(f"done in {result.seconds:.1f} s (prompt {result.prompt_id})", file=sys.stderr)
    return result.exit_code


def _main_split(args: argparse.Namespace, servers: list[str], workflow: dict, inputs: dict[str, str]) -> int:
    """`run` with several --server (or the split options): frame ranges over the servers, merged into --out."""
    from .split import SplitRender

    if not args.out:
        raise UsageError("splitting over servers needs --out (the merged video)")
    say = None if args.quiet else (lambda text: (sys.stderr.write(text + "\n"), sys.stderr.flush()))
    job = SplitRender(servers, workflow, inputs, args.sets, args.out, parts_dir=args.parts_dir,
                      range_frames=args.range_frames, resume=args.resume, keep_parts=args.keep_parts, on_text=say,
                      range_timeout=args.timeout)
    result = job.run()
    print(result.path)
    overhead = [s.seconds - s.sample_seconds for s in result.stats]
    print(f"done in {result.seconds:.1f} s: {result.frames} frames, {len(result.ranges)} ranges on "
          f"{len(result.servers)} server(s)" + (f", {result.resumed} resumed" if result.resumed else "")
          + (f"; per range outside the sampler {sum(overhead) / len(overhead):.2f} s" if overhead else "")
          + f"; merge {result.merge_seconds:.2f} s", file=sys.stderr)
    return EXIT_OK


"""Following one prompt over ComfyUI's `/ws` websocket (library: websocket-client): the events of our prompt until it
ends, with GET /history as the fallback when the connection drops or goes quiet.

The websocket goes straight to the server, never through an environment proxy (the socket is opened here and handed
to the library), and sends no Origin header. The events are those of ComfyUI 0.30.0 `server.py` / `execution.py`:
execution_start / executing / progress / executed / execution_success / execution_error / execution_interrupted.
"""
from __future__ import annotations

import json
import logging
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Mapping

import websocket

from .errors import ServerUnreachable
from .workflow import node_label

log = logging.getLogger("MagicPose")

END_EVENTS = {"execution_success": "success", "execution_error": "error", "execution_interrupted": "interrupted"}
RECV_POLL = 0.5        # s one read waits: the deadline and the stop are checked this often
QUIET_CHECK = 5.0      # s without any event after which /history is asked whether the prompt ended (missed end)
HISTORY_POLL = 0.5     # s between /history polls once the websocket is lost
CLOSE_WAIT = 1.0       # s our close waits for the server's close frame

End = tuple[str, dict]  # ("success" | "error" | "interrupted" | "timeout" | "stopped", event data)


@dataclass(frozen=True)
class RunEvent:
    """One websocket event of our prompt, with the node it concerns named readably ("" when none)."""

    type: str
    data: dict
    label: str = ""


def events_url(server: str, client_id: str) -> str:
    """`http://host:port/prefix` -> `ws://host:port/prefix/ws?clientId=...` (wss for https)."""
    parts = urllib.parse.urlsplit(server)
    return parts._replace(scheme="wss" if server.startswith("https") else "ws", path=parts.path + "/ws",
                          query=f"clientId={client_id}").geturl()


def open_events(server: str, client_id: str, timeout: float) -> websocket.WebSocket:
    """The server's event stream for `client_id` (ComfyUI sends a prompt's events to the client id it was posted
    with). `timeout` bounds the TCP connection and the handshake; ServerUnreachable when either fails."""
    url = events_url(server, client_id)
    parts = urllib.parse.urlsplit(url)
    sock = None
    try:
        sock = socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)),
                                        timeout=timeout)
        if parts.scheme == "wss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        ws = websocket.create_connection(url, timeout=timeout, socket=sock, suppress_origin=True, redirect_limit=0,
                                         skip_utf8_validation=True)
    except (OSError, websocket.WebSocketException) as e:
        if sock is not None:
            sock.close()
        raise ServerUnreachable(f"cannot open the websocket {url} ({e}); check --server") from None
    ws.settimeout(RECV_POLL)
    return ws


def close_events(ws: websocket.WebSocket) -> None:
    """Send a close frame, wait at most CLOSE_WAIT s for the server's, close the socket; never raises."""
    ws.close(timeout=CLOSE_WAIT)         # best effort; returns at once when the connection is already closed
    ws.shutdown()


def history_end(entry: Mapping) -> End | None:
    """How a prompt ended, from its /history entry (None: no entry yet, the prompt has not finished)."""
    if not entry:
        return None
    status = entry.get("status") or {}
    for kind, data in status.get("messages") or []:
        if kind in ("execution_error", "execution_interrupted"):
            return END_EVENTS[kind], data
    return ("success", {}) if status.get("status_str", "success") == "success" else ("error", {})


def poll_end(ended: Callable[[], End | None], deadline: float | None,
             stop: threading.Event | None = None) -> End:
    """Ask `ended()` every HISTORY_POLL s until it answers, the deadline passes or `stop` is set."""
    while deadline is None or time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return "stopped", {}
        found = ended()
        if found:
            return found
        time.sleep(HISTORY_POLL)
    return "timeout", {}


def _closed_text(payload: bytes) -> str:
    """`websocket closed (code 1001: going away)` from a close frame's payload (RFC 6455 §5.5.1)."""
    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    reason = payload[2:].decode("utf-8", "replace")
    return f"websocket closed (code {code}{': ' + reason if reason else ''})"


def follow(ws: websocket.WebSocket, prompt_id: str, wf: Mapping, on_event: Callable[[RunEvent], None] | None,
           deadline: float | None, ended: Callable[[], End | None], stop: threading.Event | None = None) -> End:
    """Read events until prompt `prompt_id` ends and say how; `on_event` sees each of its events but `status`.

    `ended()` asks /history (None while the prompt runs): after QUIET_CHECK s without any event (the end may have
    been missed) and, every HISTORY_POLL s, once the connection is lost or closed by the server. "timeout" once
    `deadline` (time.monotonic) passes, "stopped" once `stop` is set.
    """
    quiet_since = time.monotonic()
    while True:
        if deadline is not None and time.monotonic() > deadline:
            return "timeout", {}
        if stop is not None and stop.is_set():
            return "stopped", {}
        try:
            opcode, payload = ws.recv_data()       # answers pings; a partial frame is kept across timeouts
        except (websocket.WebSocketTimeoutException, TimeoutError):
            if time.monotonic() - quiet_since > QUIET_CHECK:
                quiet_since = time.monotonic()
                found = ended()
                if found:
                    return found
            continue
        except (OSError, websocket.WebSocketException) as e:
            log.warning("websocket lost (%s); polling /history for prompt %s", e, prompt_id)
            return poll_end(ended, deadline, stop)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            log.warning("websocket lost (%s); polling /history for prompt %s", _closed_text(payload), prompt_id)
            return poll_end(ended, deadline, stop)
        quiet_since = time.monotonic()
        if opcode != websocket.ABNF.OPCODE_TEXT:
            continue                                 # binary messages are previews
        try:
            ev = json.loads(payload.decode("utf-8", "replace"))
        except json.JSONDecodeError:
            continue
        if not isinstance(ev, dict):
            continue
        kind, data = ev.get("type", ""), ev.get("data") or {}
        if not isinstance(data, dict) or data.get("prompt_id", prompt_id) != prompt_id:
            continue
        if on_event is not None and kind != "status":
            node = data.get("display_node") or data.get("node") or data.get("node_id")
            on_event(RunEvent(kind, data, node_label(wf, node) if node is not None else ""))
        if kind in END_EVENTS and data.get("prompt_id") == prompt_id:
            return END_EVENTS[kind], data

"""A minimal RFC 6455 websocket client on the standard library, for the headless ComfyUI client.

Implements the client side of RFC 6455 ("The WebSocket Protocol", IETF, 2011):
- the opening handshake (§4.1) with the Sec-WebSocket-Accept check (§4.2.2, §1.3);
- base framing (§5.2): client frames are masked (§5.3), server frames must not be;
- fragmented messages (§5.4), with control frames allowed between fragments;
- ping -> pong (§5.5.2, §5.5.3) and the closing handshake (§5.5.1, §7.1.2).

No extensions (no permessage-deflate), no subprotocols. ComfyUI's `/ws` endpoint (aiohttp) needs none of them.
Only `socket`, `ssl`, `hashlib`, `base64` and `os` are used, so the client runs anywhere Python runs.
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import struct
import time
import urllib.parse
from dataclasses import dataclass

# RFC 6455 §1.3: the GUID appended to Sec-WebSocket-Key before hashing.
ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# RFC 6455 §5.2 opcodes.
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HANDSHAKE_BYTES = 65536


class WebSocketError(ConnectionError):
    """The peer broke the protocol or refused the upgrade."""


class WebSocketClosed(WebSocketError):
    """The connection is closed (close frame received, or the TCP stream ended: code 1006)."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(f"websocket closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One complete data message (fragments joined)."""

    opcode: int        # OP_TEXT or OP_BINARY
    data: bytes

    @property
    def is_text(self) -> bool:
        return self.opcode == OP_TEXT

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2 step 5.4)."""
    return base64.b64encode(hashlib.sha1((key + ACCEPT_GUID).encode("ascii")).digest()).decode("ascii")


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR `data` with the 4-byte masking key repeated (RFC 6455 §5.3); its own inverse."""
    n = len(data)
    if n == 0:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One frame (RFC 6455 §5.2); `mask` given (4 bytes) for client-to-server frames."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if mask is None:
        return bytes(head) + payload
    return bytes(head) + mask + apply_mask(payload, mask)


def decode_frame(buf: bytes | bytearray) -> tuple[bool, int, bytes, bool, int] | None:
    """Parse one frame at the start of `buf`: (fin, opcode, payload, was_masked, bytes used), or None if incomplete."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b0 & 0x70:
        raise WebSocketError("reserved bits set in a frame (no extension was negotiated)")
    fin, opcode, masked, n = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
    pos = 2
    if n == 126:
        if len(buf) < pos + 2:
            return None
        (n,) = struct.unpack_from("!H", buf, pos)
        pos += 2
    elif n == 127:
        if len(buf) < pos + 8:
            return None
        (n,) = struct.unpack_from("!Q", buf, pos)
        pos += 8
    key = b""
    if masked:
        if len(buf) < pos + 4:
            return None
        key = bytes(buf[pos:pos + 4])
        pos += 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos:pos + n])
    if masked:
        payload = apply_mask(payload, key)
    return fin, opcode, payload, masked, pos + n


class WebSocket:
    """A connected client websocket. Blocking; `recv(timeout)` raises TimeoutError without losing partial frames."""

    def __init__(self, sock: socket.socket, leftover: bytes = b""):
        self.sock = sock
        self._buf = bytearray(leftover)
        self._frag_op: int | None = None           # opcode of the message being reassembled
        self._frag: list[bytes] = []
        self.closed = False

    # --- opening handshake ----------------------------------------------------------------------------
    @classmethod
    def connect(cls, url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> "WebSocket":
        """Open `ws://` or `wss://` `url` (RFC 6455 §4.1). Raises OSError if unreachable, WebSocketError if refused."""
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("ws", "wss"):
            raise ValueError(f"websocket URL must start with ws:// or wss://, got {url!r}")
        port = u.port or (443 if u.scheme == "wss" else 80)
        host = u.hostname or "localhost"
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if u.scheme == "wss":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            target = (u.path or "/") + (f"?{u.query}" if u.query else "")
            host_header = host if u.port is None else f"{host}:{u.port}"
            lines = [f"GET {target} HTTP/1.1", f"Host: {host_header}", "Upgrade: websocket",
                     "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            raw = b""
            while b"\r\n\r\n" not in raw:
                chunk = sock.recv(4096)
                if not chunk:
                    raise WebSocketError(f"{url}: connection closed during the websocket handshake")
                raw += chunk
                if len(raw) > MAX_HANDSHAKE_BYTES:
                    raise WebSocketError(f"{url}: handshake response too large")
            head, leftover = raw.split(b"\r\n\r\n", 1)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or parts[1] != "101":
                raise WebSocketError(f"{url}: server refused the websocket upgrade: {status_line!r}")
            got = {}
            for h in header_lines:
                k, _, v = h.partition(":")
                got[k.strip().lower()] = v.strip()
            if got.get("upgrade", "").lower() != "websocket":
                raise WebSocketError(f"{url}: handshake response lacks 'Upgrade: websocket'")
            if got.get("sec-websocket-accept") != accept_key(key):
                raise WebSocketError(f"{url}: wrong Sec-WebSocket-Accept in the handshake response")
        except BaseException:
            sock.close()
            raise
        return cls(sock, leftover)

    # --- sending --------------------------------------------------------------------------------------
    def _send(self, opcode: int, payload: bytes) -> None:
        self.sock.settimeout(30.0)
        self.sock.sendall(encode_frame(opcode, payload, mask=os.urandom(4)))

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        self._send(OP_BINARY, data)

    def ping(self, data: bytes = b"") -> None:
        self._send(OP_PING, data)

    # --- receiving ------------------------------------------------------------------------------------
    def recv(self, timeout: float | None = None) -> Message:
        """Next data message; answers pings and close frames on the way. TimeoutError if none within `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = decode_frame(self._buf)
            if frame is None:
                self._fill(deadline)
                continue
            fin, opcode, payload, masked, used = frame
            del self._buf[:used]
            if masked:
                raise WebSocketError("the server sent a masked frame (RFC 6455 §5.1 forbids it)")
            msg = self._handle(fin, opcode, payload)
            if msg is not None:
                return msg

    def _fill(self, deadline: float | None) -> None:
        if self.closed:
            raise WebSocketClosed(1006, "connection already closed")
        if deadline is None:
            self.sock.settimeout(None)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no websocket message within the timeout")
            self.sock.settimeout(left)
        chunk = self.sock.recv(65536)          # socket.timeout is TimeoutError (Python >= 3.10)
        if not chunk:
            self.closed = True
            raise WebSocketClosed(1006, "connection lost without a close frame")
        self._buf += chunk

    def _handle(self, fin: bool, opcode: int, payload: bytes) -> Message | None:
        if opcode == OP_PING:
            self._send(OP_PONG, payload)
            return None
        if opcode == OP_PONG:
            return None
        if opcode == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            reason = payload[2:].decode("utf-8", "replace")
            if not self.closed:
                try:
                    self._send(OP_CLOSE, payload[:2])   # echo the status code (§5.5.1)
                except OSError:
                    pass
            self.closed = True
            raise WebSocketClosed(code, reason)
        if opcode in (OP_TEXT, OP_BINARY):
            if self._frag_op is not None:
                raise WebSocketError("new data frame while a fragmented message is unfinished")
            if fin:
                return Message(opcode, payload)
            self._frag_op, self._frag = opcode, [payload]
            return None
        if opcode == OP_CONTINUATION:
            if self._frag_op is None:
                raise WebSocketError("continuation frame without a message to continue")
            self._frag.append(payload)
            if not fin:
                return None
            msg = Message(self._frag_op, b"".join(self._frag))
            self._frag_op, self._frag = None, []
            return msg
        raise WebSocketError(f"unknown websocket opcode {opcode:#x}")

    # --- closing --------------------------------------------------------------------------------------
    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (best effort) and close the socket; waits at most 1 s for the server's echo."""
        if not self.closed:
            self.closed = True
            try:
                self._send(OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8")[:123])
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:          # drain until the server closes its side
                    self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
                    if not self.sock.recv(65536):
                        break
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "WebSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

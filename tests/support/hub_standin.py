"""A stand-in Hugging Face hub on 127.0.0.1 for download tests: the real huggingface_hub download code talks to it
through HF_ENDPOINT (or its ``endpoint=`` argument); tests never reach a real hub.

It answers what ``hf_hub_download`` asks of a hub (huggingface_hub 0.2x-2.x): ``HEAD`` and ``GET``
``/{repo_id}/resolve/{revision}/{filename}`` with the ``X-Repo-Commit``, ``ETag`` and ``Content-Length`` headers
(the ETag of an LFS file is its sha256), byte ``Range`` requests, and 404 with ``X-Error-Code: EntryNotFound`` for
files it does not hold. Every request is recorded (method, path) so tests can count downloads.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class StandInHub:
    def __init__(self, files: dict[tuple[str, str], Path]):
        """``files``: (repo_id, filename) -> local file served for it."""
        self.files = {k: Path(v) for k, v in files.items()}
        self.etags = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in self.files.items()}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _lookup(self):
                path = unquote(urlsplit(self.path).path).lstrip("/")
                hub.requests.append((self.command, "/" + path))
                parts = path.split("/")
                if "resolve" not in parts:
                    return None
                i = parts.index("resolve")
                repo, name = "/".join(parts[:i]), "/".join(parts[i + 2:])
                return (repo, name) if (repo, name) in hub.files else None

            def _answer(self, body: bool):
                key = self._lookup()
                if key is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = hub.files[key].read_bytes()
                start, end = 0, len(data) - 1
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start = int(a or 0)
                    end = int(b) if b else end
                chunk = data[start:end + 1]
                self.send_response(206 if rng else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hub.etags[key]}"')
                self.send_header("Content-Length", str(len(chunk) if body or rng else len(data)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(chunk)

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="standin-hub", daemon=True)

    def downloads(self, filename: str) -> int:
        """How many GET requests fetched ``filename``."""
        return sum(1 for m, p in self.requests if m == "GET" and p.endswith("/" + filename))

    def __enter__(self) -> "StandInHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def silent_port() -> tuple[object, str]:
    """A loopback socket that accepts connections and never answers (a firewall that swallows requests):
    (the socket, to close when done; its http:// URL)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, f"http://127.0.0.1:{s.getsockname()[1]}"


def closed_port_url() -> str:
    """An http:// URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"

"""A loopback model hub for the ``comfyfn.models.pull`` tests: one file at
``/model.safetensors`` with Range support, redirects (to itself or another origin), and
ways to fail — a status for every request, a transfer cut after N bytes, a trickle."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from comfyfn.models import ModelFile

BODY = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, not a round number
SHA = hashlib.sha256(BODY).hexdigest()


@dataclass
class ModelServer:
    """A loopback server for one file at ``/model.safetensors``; ``redirects`` maps a path to
    its ``Location`` (``/redirect`` → the file, with the ``linked`` headers)."""

    body: bytes = BODY
    ranges: bool = True  #: honour Range requests
    cut_after: list[int] = field(default_factory=list)  #: per request: close after N bytes
    status: int | None = None  #: answer every request with this status instead
    linked: dict[str, str] = field(default_factory=dict)  #: headers on the redirect
    redirects: dict[str, str] = field(default_factory=lambda: {"/redirect": "/model.safetensors"})
    sized: bool = True  #: send Content-Length (False: the body ends when the server closes)
    slow: float = 0.0  #: seconds to wait after each block sent
    block: int = 65536  #: bytes per block sent
    requests: list[dict[str, str]] = field(default_factory=list)  #: each request's headers
    paths: list[str] = field(default_factory=list)  #: each request's path
    sent: int = 0
    sent_now: int = 0

    def url(self, path: str = "/model.safetensors") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append({k.lower(): v for k, v in self.headers.items()})
                owner.paths.append(self.path)
                if owner.status is not None:
                    self.send_response(owner.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path in owner.redirects:
                    self.send_response(302)
                    self.send_header("Location", owner.redirects[self.path])
                    for key, value in owner.linked.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    try:
                        owner.serve(self)
                    except (BrokenPipeError, ConnectionResetError):
                        owner.sent_now = 0  # the client hung up (a test makes it)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        total, start = len(self.body), 0
        match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range", ""))
        if match and self.ranges:
            start = int(match[1])
            if start >= total:
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{total}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            handler.send_response(200)
        if self.sized:
            handler.send_header("Content-Length", str(total - start))
        else:
            handler.close_connection = True
        handler.end_headers()
        limit = self.cut_after.pop(0) if self.cut_after else None
        data = self.body[start:]
        for i in range(0, len(data), self.block):
            block = data[i : i + self.block]
            if limit is not None and self.sent_now + len(block) > limit:
                handler.wfile.write(block[: max(limit - self.sent_now, 0)])
                handler.wfile.flush()
                handler.close_connection = True
                self.sent += max(limit - self.sent_now, 0)
                self.sent_now = 0
                return
            handler.wfile.write(block)
            handler.wfile.flush()
            self.sent += len(block)
            self.sent_now += len(block)
            if self.slow:
                threading.Event().wait(self.slow)
        self.sent_now = 0

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def entry(server: ModelServer, **changes: object) -> ModelFile:
    """The manifest entry for the server's file (its sha256 and size), with ``changes``."""
    fields: dict[str, object] = {
        "name": "tiny.safetensors",
        "folder": "checkpoints",
        "url": server.url(),
        "sha256": SHA,
        "size": len(BODY),
    }
    fields.update(changes)
    return ModelFile(**fields)  # type: ignore[arg-type]


def leftovers(models: Path) -> list[str]:
    """The names in ``models/checkpoints`` (the final file, a part, a lock)."""
    return sorted(p.name for p in (models / "checkpoints").iterdir())

"""A loopback HTTP server in a thread that serves files put in a dict (tests fetch images by
URL from it): a path maps to PNG bytes, or to a :class:`Reply` that says how to answer; any
other path is a 404."""

from __future__ import annotations

import contextlib
import http.server
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """How the server answers one path."""

    body: bytes = b""
    status: int = 200
    media_type: str = "image/png"
    held: bool = False  #: answer only once the server is closed (a server that hangs)
    location: str | None = None  #: a ``Location`` header (a redirect's target)
    sized: bool = True  #: send ``Content-Length``; False: the body ends when the server closes


NOT_FOUND = Reply(status=404)


class FileServer:
    """``files[path]`` (bytes, served as PNG, or a :class:`Reply`) at ``url + path``; a context
    manager (the server runs inside the ``with``)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes | Reply] = {}
        self._released = threading.Event()  #: set on close: held replies go out then
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def reply_for(self, path: str) -> Reply:
        found = self.files.get(path, NOT_FOUND)
        return found if isinstance(found, Reply) else Reply(found)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                reply = server.reply_for(self.path)
                if reply.held:
                    server._released.wait()
                # a client may have gone: stopped reading over its limit, or timed out
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.media_type)
                    if reply.location is not None:
                        self.send_header("Location", reply.location)
                    if reply.sized:
                        self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

"""A small HTTP proxy in front of a real ComfyUI that injects the faults a real one cannot show.

It forwards real requests to ``upstream`` and, on demand, breaks some of them. Every switch
can be given at construction or changed while the proxy runs; the "next N" switches count
down as they fire, so ``truncate_views=1`` breaks one answer and then forwards faithfully.

POST /prompt:

- ``drop_requests``: lose the next N POST /prompt requests before they reach the server.
- ``drop_answers``: forward the next N POST /prompt requests, then lose the server's answer
  (the job is queued; the client never hears so).
- ``block_prompts``: answer the next N POST /prompt requests ``200`` with ``blocked_body``
  (an auth proxy's login page by default; ``b"not json{"`` or ``b"{}"`` for the other
  garbled answers) without forwarding them: the server never sees the job.

GET /view:

- ``truncate_views``: the next N successful answers carry only the first half of the image,
  with a Content-Length that matches it (the HTTP exchange looks fine; only decoding shows
  the damage).
- ``garble_views``: the next N answers are ``200 text/html`` with an HTML page instead of the
  image (the server is not asked).
- ``fail_views``: the next N answers are ``500`` (the server is not asked).

GET /history:

- ``garble_history``: the next N ``GET /history/<id>`` answers are ``200 text/html`` with a
  non-JSON page (the server is not asked).
- ``fail_history``: the next N ``GET /history/<id>`` answers are ``500`` (not asked either).
- ``history_delay``: seconds every ``GET /history`` and ``GET /history/<id>`` waits before it
  is forwarded (0 = none); with ``delay_history`` set to N, only the next N are delayed.

Counters: ``seen_prompt_posts``, ``forwarded_prompt_posts``, ``seen_view_gets``,
``seen_history_gets``, and ``faults``: every fault applied, as ``(switch, path)`` in order.

Websocket upgrades are refused, so clients behind the proxy follow their jobs by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import httpx

_HTML = b"<html><body><h1>502 Bad Gateway</h1><p>upstream hiccup</p></body></html>\n"
_LOGIN = b"<html><body><form action='/login'>Sign in to continue</form></body></html>\n"
_ERROR = b"500 Internal Server Error\n\nServer got itself in trouble"


@dataclass
class FaultProxy:
    upstream: str
    drop_requests: int = 0  #: lose this many POST /prompt requests before forwarding them
    drop_answers: int = 0  #: forward this many, then lose the server's answer
    block_prompts: int = 0  #: answer this many POST /prompt with ``blocked_body``, unsent
    blocked_body: bytes = _LOGIN
    truncate_views: int = 0  #: cut this many GET /view bodies in half (consistent length)
    garble_views: int = 0  #: answer this many GET /view with an HTML page
    fail_views: int = 0  #: answer this many GET /view with a 500
    garble_history: int = 0  #: answer this many GET /history/<id> with non-JSON text
    fail_history: int = 0  #: answer this many GET /history/<id> with a 500
    history_delay: float = 0.0  #: seconds each GET /history… waits before being forwarded
    delay_history: int | None = None  #: only delay this many (None: all, while history_delay)
    seen_prompt_posts: int = 0
    forwarded_prompt_posts: int = 0
    seen_view_gets: int = 0
    seen_history_gets: int = 0
    faults: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)
    _client: httpx.AsyncClient | None = field(default=None, repr=False)
    _tasks: set[asyncio.Task] = field(default_factory=set, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=30)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._client is not None, "not entered"
        self._server.close()
        for task in list(self._tasks):  # e.g. a request still sleeping in history_delay
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        await self._client.aclose()

    def _take(self, switch: str, path: str) -> bool:
        """Fire a "next N" switch if it has any left."""
        left = getattr(self, switch)
        if not left:
            return False
        setattr(self, switch, left - 1)
        self.faults.append((switch, path))
        return True

    async def _history_pause(self, path: str) -> None:
        if self.history_delay <= 0:
            return
        if self.delay_history is not None and not self._take("delay_history", path):
            return
        if self.delay_history is None:
            self.faults.append(("history_delay", path))
        await asyncio.sleep(self.history_delay)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a server's handler runs in a task of its own
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        lowered = {k.lower(): v for k, v in headers.items()}
        if lowered.get("upgrade", "").lower() == "websocket":
            return
        body = await reader.readexactly(int(lowered.get("content-length", 0)))
        path = target.split("?")[0]
        is_prompt = method == "POST" and path == "/prompt"
        is_view = method == "GET" and path == "/view"
        if is_prompt:
            self.seen_prompt_posts += 1
            if self._take("drop_requests", path):
                return
            if self._take("block_prompts", path):
                await _reply(writer, 200, "OK", "text/html", self.blocked_body)
                return
        if method == "GET" and path.startswith("/history"):
            self.seen_history_gets += 1
            await self._history_pause(path)
            if path.startswith("/history/") and self._take("garble_history", path):
                await _reply(writer, 200, "OK", "text/html", _HTML)
                return
            if path.startswith("/history/") and self._take("fail_history", path):
                await _reply(writer, 500, "Internal Server Error", "text/plain", _ERROR)
                return
        if is_view:
            self.seen_view_gets += 1
            if self._take("garble_views", path):
                await _reply(writer, 200, "OK", "text/html", _HTML)
                return
            if self._take("fail_views", path):
                await _reply(writer, 500, "Internal Server Error", "text/plain", _ERROR)
                return
        keep = {k: v for k, v in headers.items() if k.lower() in ("content-type",)}
        assert self._client is not None, "not entered"
        response = await self._client.request(method, target, content=body, headers=keep)
        if is_prompt:
            self.forwarded_prompt_posts += 1
            if self._take("drop_answers", path):
                return
        payload = response.content
        if is_view and response.status_code == 200 and self._take("truncate_views", path):
            payload = payload[: len(payload) // 2]
        content_type = response.headers.get("content-type", "application/octet-stream")
        await _reply(writer, response.status_code, response.reason_phrase, content_type, payload)


async def _reply(
    writer: asyncio.StreamWriter, status: int, reason: str, content_type: str, payload: bytes
) -> None:
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    await writer.drain()

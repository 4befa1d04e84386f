"""One websocket per client, shared by all its jobs: connects, reads, and routes messages.

ComfyUI sends a job's execution messages only to the socket whose ``clientId`` submitted it,
so every job of a client subscribes here by prompt id before it is submitted; ``status``
messages (the server's queue length, after every change) go to every subscribed job. When the
socket drops, every subscriber gets :data:`LOST` and falls back to polling; a later
:meth:`EventSocket.ensure` reconnects under the same client id and events flow again.

A protected server's credentials go on the upgrade request (headers, and query parameters
on the URL); the URL this module logs has none, and the ``websockets.client`` debug lines
(request line and headers) pass through a logger that blanks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from comfyfn._tasks import cancel_and_wait
from comfyfn.client._credentials import Credentials
from comfyfn.events import BinaryFrame, parse_binary_frame

__all__ = ["JOB_TAG", "LOST", "PROBE", "EventSocket"]

log = logging.getLogger("comfyfn")

LOST = object()  #: the socket dropped; poll instead
PROBE = object()  #: something changed locally (e.g. a cancel): check the server now

#: The key of the comfyfn job id (the prompt id we chose) in a prompt's
#: ``extra_data["metadata"]``, which newer servers echo as ``data["metadata"]`` in every
#: event of that prompt.
JOB_TAG = "comfyfn_job"

_FEATURES = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})


class _Redacting(logging.LoggerAdapter[logging.Logger]):
    """A logger that blanks the credentials in every message (formatted first)."""

    def __init__(self, logger: logging.Logger, credentials: Credentials) -> None:
        super().__init__(logger)
        self._credentials = credentials

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):  # what logging itself would report as a bad call
            text = f"{msg} {args}"
        self.logger.log(level, self._credentials.redact(text), **kwargs)


def _with_query(url: str, query: dict[str, str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(query)}" if query else url


class EventSocket:
    """Routes websocket messages to per-prompt queues.

    ``ws_url`` has no credentials (it is what the log shows); ``credentials`` are added to
    the connection.
    """

    def __init__(
        self,
        ws_url: str,
        *,
        credentials: Credentials | None = None,
        connect_timeout: float = 5.0,
        retry_after: float = 1.0,
    ):
        self._url = ws_url
        self._credentials = credentials or Credentials()
        self._connect_timeout = connect_timeout
        self._retry_after = retry_after
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subs: dict[str, asyncio.Queue[Any]] = {}
        self._running_prompt: str | None = None
        self._last_attempt = -1e9
        self._lock = asyncio.Lock()

    @property
    def alive(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def ensure(self) -> bool:
        """Connect if not connected (at most one attempt per ``retry_after`` s); True if live."""
        if self.alive:
            return True
        async with self._lock:
            if self.alive:
                return True
            now = time.monotonic()
            if now - self._last_attempt < self._retry_after:
                return False
            self._last_attempt = now
            try:
                async with asyncio.timeout(self._connect_timeout):  # not wait_for: on 3.11
                    ws = await self._connect()  # it can swallow a cancellation
                await ws.send(_FEATURES)
            except (OSError, WebSocketException, TimeoutError) as exc:
                log.warning(
                    "websocket %s unavailable (%s); polling /history instead",
                    self._url,
                    self._credentials.redact(str(exc)) or type(exc).__name__,
                )
                return False
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws), name="comfyfn-ws-reader")
            log.debug("websocket connected: %s", self._url)
            return True

    async def _connect(self) -> ClientConnection:
        credentials = self._credentials
        logger = logging.getLogger("websockets.client")
        return await connect(
            _with_query(self._url, dict(credentials.query)),
            additional_headers=credentials.http_headers(),
            max_size=None,
            open_timeout=None,
            compression=None,  # small JSON messages: deflating them costs both ends more CPU
            logger=_Redacting(logger, credentials) if credentials else logger,
        )

    def subscribe(self, prompt_id: str) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._subs[prompt_id] = queue
        return queue

    def unsubscribe(self, prompt_id: str, queue: asyncio.Queue[Any] | None = None) -> None:
        """Stop routing ``prompt_id``'s messages (only if they go to ``queue``, when given)."""
        if queue is None or self._subs.get(prompt_id) is queue:
            self._subs.pop(prompt_id, None)

    def nudge(self, prompt_id: str) -> None:
        """Make the job watching ``prompt_id`` check the server now."""
        if (queue := self._subs.get(prompt_id)) is not None:
            queue.put_nowait(PROBE)

    async def drop(self) -> None:
        """Close the connection as if the network dropped it (subscribers fall back)."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.wait([self._reader])  # it ends with the connection
            if not self._reader.cancelled() and (error := self._reader.exception()) is not None:
                raise error

    async def close(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await cancel_and_wait(self._reader)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._ws = self._reader = None

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self._route_frame(message)
                else:
                    self._route_json(message)
        except (OSError, WebSocketException) as exc:
            log.warning("websocket dropped: %s", self._credentials.redact(str(exc)))
        finally:
            for queue in list(self._subs.values()):  # a copy: jobs may unsubscribe meanwhile
                queue.put_nowait(LOST)

    def _route_json(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except json.JSONDecodeError:
            log.debug("ignoring non-JSON websocket text: %.80s", raw)
            return
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, dict):
            log.debug("ignoring websocket message of an unknown shape: %.80s", raw)
            return
        if message.get("type") == "status":  # the server's queue changed: every job's news
            for subscriber in self._subs.values():
                subscriber.put_nowait(message)
            return
        prompt_id = data.get("prompt_id")
        if _names_another_job(data, prompt_id):
            log.debug("ignoring a websocket message tagged for another job: %.80s", raw)
            return
        if message.get("type") == "executing":
            self._running_prompt = prompt_id if data.get("node") is not None else None
        if prompt_id is not None and (queue := self._subs.get(prompt_id)) is not None:
            queue.put_nowait(message)

    def _route_frame(self, raw: bytes) -> None:
        frame: BinaryFrame | None = parse_binary_frame(raw)
        if frame is None:
            return
        prompt_id = frame.prompt_id or self._running_prompt
        if prompt_id is not None and (queue := self._subs.get(prompt_id)) is not None:
            queue.put_nowait(frame)


def _names_another_job(data: dict[str, Any], prompt_id: object) -> bool:
    """Whether the message's echoed metadata (newer servers) names a comfyfn job other than
    its prompt: then it is not ours. Without the echo, or without our tag in it (metadata
    another client set), the prompt id alone decides, as on every server."""
    metadata = data.get("metadata")
    return isinstance(metadata, dict) and JOB_TAG in metadata and metadata[JOB_TAG] != prompt_id

"""The synchronous client: runs :class:`AsyncClient` on a private event-loop thread.

Nothing is reimplemented here: every method forwards to the async one through an anyio
blocking portal, and :meth:`Client.stream` pulls the async event stream one event at a time.
Ctrl-C while waiting cancels the job on the server (interrupt or dequeue) before re-raising.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError as FutureCancelled
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from comfyfn.client import AsyncClient
from comfyfn.events import Event

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Synchronous twin of :class:`~comfyfn.AsyncClient`; takes the same arguments.

    ::

        with comfyfn.Client() as c:
            gen = c.generate("a red apple", seed=42, width=1024, height=768)
    """

    def __init__(self, server: str | None = None, **kwargs: Any) -> None:
        self._portal_cm = start_blocking_portal()
        self._portal: BlockingPortal = self._portal_cm.__enter__()
        try:
            self._async = AsyncClient(server, **kwargs)
            self._portal.call(self._async.open)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self._closed = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._portal.call(self._async.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)

    @property
    def server(self) -> str:
        return self._async.server

    @property
    def client_id(self) -> str:
        return self._async.client_id

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        future = self._portal.start_task_soon(functools.partial(fn, *args, **kwargs))
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # the job's cleanup interrupts or dequeues it on the server
            try:
                future.result(timeout=10)
            except (FutureCancelled, Exception):
                pass
            raise

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Event]:
        """Like :meth:`AsyncClient.stream`, as a plain iterator of events."""
        return self._iterate(self._async.stream(*args, **kwargs))

    def stream_graph(self, *args: Any, **kwargs: Any) -> Iterator[Event]:
        """Like :meth:`AsyncClient.stream_graph`, as a plain iterator of events."""
        return self._iterate(self._async.stream_graph(*args, **kwargs))

    def _iterate(self, agen: Any) -> Iterator[Event]:
        try:
            while True:
                try:
                    yield self._call(agen.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._portal.call(agen.aclose)


def _forward(name: str) -> Callable[..., Any]:
    target = getattr(AsyncClient, name)

    @functools.wraps(target)
    def method(self: Client, *args: Any, **kwargs: Any) -> Any:
        return self._call(getattr(self._async, name), *args, **kwargs)

    return method


for _name in (
    "generate", "run", "cancel", "drop_websocket", "system_stats", "features", "object_info",
    "models", "queue", "queue_position", "delete_from_queue", "clear_queue", "interrupt",
    "history", "delete_history", "free", "view", "upload_image",
):
    setattr(Client, _name, _forward(_name))

"""The synchronous client: runs :class:`AsyncClient` on a private event-loop thread.

Nothing is reimplemented here: every method forwards to the async one on that loop, and
:meth:`Client.stream` pulls the async event stream one event at a time. Ctrl-C while waiting
cancels the job on the server (interrupt or dequeue) before re-raising. The loop thread is a
daemon, so a client that is never closed does not keep the interpreter from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from comfyfn.client._async import AsyncClient
from comfyfn.events import Event
from comfyfn.result import Generation
from comfyfn.workflow._signature import signature_for
from comfyfn.workflow._workflow import Workflow

__all__ = ["Client"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="comfyfn-client", daemon=True
        )
        self.thread.start()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the loop and wait; Ctrl-C cancels it and waits
        (up to 10 s) for its clean-up, which cancels a submitted job on the server."""
        done = threading.Event()
        task: list[asyncio.Task[Any]] = []

        async def runner() -> Any:
            task.append(asyncio.current_task())  # type: ignore[arg-type]
            try:
                return await fn(*args, **kwargs)
            finally:
                done.set()

        future: Future[Any] = asyncio.run_coroutine_threadsafe(runner(), self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            if task:
                self.loop.call_soon_threadsafe(task[0].cancel)
                done.wait(10)
            else:
                future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join()
            self.loop.close()


class Client:
    """Synchronous twin of :class:`~comfyfn.AsyncClient`; takes the same arguments.

    ::

        with comfyfn.Client() as c:
            gen = c.generate("a red apple", seed=42, width=1024, height=768)
    """

    def __init__(self, server: str | None = None, **kwargs: Any) -> None:
        self._loop = _LoopThread()
        self._finalizer = weakref.finalize(self, self._loop.stop)
        self._closed = False
        self._async = AsyncClient(server, **kwargs)
        try:
            self._loop.call(self._async.open)
        except BaseException:
            self._finalizer()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.call(self._async.aclose)
        finally:
            self._finalizer()

    @property
    def server(self) -> str:
        return self._async.server

    @property
    def client_id(self) -> str:
        return self._async.client_id

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._loop.call(fn, *args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Event]:
        """Like :meth:`AsyncClient.stream`, as a plain iterator of events."""
        return self._iterate(self._async.stream(*args, **kwargs))

    def stream_graph(self, *args: Any, **kwargs: Any) -> Iterator[Event]:
        """Like :meth:`AsyncClient.stream_graph`, as a plain iterator of events."""
        return self._iterate(self._async.stream_graph(*args, **kwargs))

    def function(self, workflow: Workflow) -> Callable[..., Generation]:
        """A callable taking the workflow's parameters as keyword arguments."""

        def call(**params: Any) -> Generation:
            return self.run(workflow, **params)

        return signature_for(workflow, call)

    def _iterate(self, agen: Any) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._call(agen.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                with contextlib.suppress(RuntimeError):  # still closing after a Ctrl-C
                    self._loop.call(agen.aclose)


def _forward(name: str) -> Callable[..., Any]:
    target = getattr(AsyncClient, name)

    @functools.wraps(target)
    def method(self: Client, *args: Any, **kwargs: Any) -> Any:
        return self._call(getattr(self._async, name), *args, **kwargs)

    return method


for _name in (
    "generate",
    "run",
    "workflow",
    "cancel",
    "drop_websocket",
    "system_stats",
    "features",
    "object_info",
    "models",
    "queue",
    "queue_position",
    "delete_from_queue",
    "clear_queue",
    "interrupt",
    "history",
    "delete_history",
    "free",
    "view",
    "upload_image",
):
    setattr(Client, _name, _forward(_name))

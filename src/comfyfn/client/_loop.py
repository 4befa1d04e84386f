"""An event loop on a private daemon thread, for the synchronous client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

__all__ = ["LoopThread"]

P = ParamSpec("P")
T = TypeVar("T")


class LoopThread:
    """An event loop running forever on a daemon thread (so it never keeps the interpreter
    from exiting)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="comfyfn-client", daemon=True
        )
        self.thread.start()

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` on the loop and return its result; Ctrl-C cancels it
        and waits (up to 10 s) for its clean-up, which cancels a submitted job on the server."""
        done = threading.Event()
        tasks: list[asyncio.Task[Any]] = []

        async def runner() -> T:
            task = asyncio.current_task()
            assert task is not None
            tasks.append(task)
            try:
                return await fn(*args, **kwargs)
            finally:
                done.set()

        future: Future[T] = asyncio.run_coroutine_threadsafe(runner(), self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            if tasks:
                self.loop.call_soon_threadsafe(tasks[0].cancel)
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

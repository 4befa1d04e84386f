"""Waiting in tests for something another process or thread does: poll with a deadline, and
fail the test (never return quietly) when the deadline passes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str | Callable[[], str],
    *,
    interval: float = 0.05,
) -> T:
    """``check()``'s first true value, polled every ``interval`` seconds; past ``timeout``
    seconds the test fails, naming ``what`` it waited for (a callable: asked only then, for
    what the failure should show)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            pytest.fail(f"{said}: not within {timeout:g} s")
        time.sleep(interval)
    return value


async def await_for(
    check: Callable[[], Awaitable[T | Literal[False] | None]],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
) -> T:
    """:func:`wait_for` for an async ``check``, sleeping on the running loop (anyio)."""
    import anyio

    deadline = time.monotonic() + timeout
    while not (value := await check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        await anyio.sleep(interval)
    return value


async def await_until(
    check: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
) -> T:
    """:func:`wait_for` inside a running event loop: a plain ``check``, polled on the loop."""

    async def checked() -> T | Literal[False] | None:
        return check()

    return await await_for(checked, timeout, what, interval=interval)

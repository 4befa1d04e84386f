"""Ending asyncio tasks without swallowing the caller's own cancellation.

``task.cancel()`` then ``with suppress(CancelledError): await task`` has a hole: if the
*caller* is cancelled while it waits there, the CancelledError it gets is taken for the
task's and suppressed, and the caller runs on as if nobody had asked it to stop (the same
kind of hole as ``asyncio.wait_for`` on Python 3.11). :func:`cancel_and_wait` waits with
:func:`asyncio.wait`, which never raises the tasks' own outcomes, so a cancellation of the
caller always propagates — at once: a caller cancelled again while it waits leaves the
tasks cancelled but perhaps not yet ended (what a second Ctrl-C asks for)."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until each has ended. A task that ended with an error
    (rather than cancelled or done) raises it here, the first one's, after all have ended
    (every task's error is read, so none is reported as never retrieved)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    errors = [task.exception() for task in tasks if not task.cancelled()]
    for error in errors:
        if error is not None:
            raise error

"""comfyfn._tasks.cancel_and_wait: the tasks end, their errors surface, and a cancellation of
the caller while it waits is never swallowed (as ``suppress(CancelledError): await task``
swallows it)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from comfyfn._tasks import cancel_and_wait

pytestmark = pytest.mark.anyio


async def slow_to_end(ended: asyncio.Event, release: asyncio.Event) -> None:
    """A task that, once cancelled, takes until ``release`` to end."""
    try:
        await asyncio.Event().wait()
    finally:
        ended.set()
        await release.wait()


async def test_the_tasks_end_and_an_error_they_end_with_is_raised():
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise ValueError("broke while ending")

    quiet = asyncio.create_task(asyncio.Event().wait())
    loud = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)  # both started
    with pytest.raises(ValueError, match="broke while ending"):
        await cancel_and_wait(quiet, loud)
    assert quiet.cancelled() and loud.done()


async def waiter(style: str, task: asyncio.Task[None], after: list[str]) -> None:
    if style == "suppress":
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    else:
        await cancel_and_wait(task)
    after.append("ran on")  # only if the caller's own cancellation was swallowed


@pytest.mark.parametrize(("style", "swallowed"), [("suppress", True), ("cancel_and_wait", False)])
async def test_a_cancellation_of_the_caller_while_it_waits_is_kept(style, swallowed):
    ended, release, after = asyncio.Event(), asyncio.Event(), list[str]()
    task = asyncio.create_task(slow_to_end(ended, release))
    await asyncio.sleep(0)
    caller = asyncio.create_task(waiter(style, task, after))
    await ended.wait()  # the task was cancelled and is ending; the caller waits for it
    caller.cancel()  # the caller is asked to stop while it waits
    release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    assert caller.cancelled() is not swallowed
    assert (after == ["ran on"]) is swallowed

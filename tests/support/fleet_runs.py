"""Running tickets on a real :class:`~comfyfn.fleet.Fleet` in tests: each run in a task of its
own, and (for the job the server is to be busy with) waited on until its server starts it."""

from __future__ import annotations

import asyncio

from comfyfn.events import Started
from comfyfn.fleet import Fleet, Outcome, Ticket


async def record_nothing(_url: str, _prompt_id: str) -> None:
    """An ``on_submit`` that records nothing (no store or manifest in these tests)."""


async def run_in_task(fleet: Fleet, ticket: Ticket) -> asyncio.Task[Outcome]:
    """``ticket`` given a slot and run in a task (submitted, or waiting for its turn)."""
    slot = await fleet.slot(ticket)
    assert slot is not None
    return asyncio.create_task(fleet.run(ticket, slot, on_submit=record_nothing))


async def run_started(fleet: Fleet, ticket: Ticket) -> asyncio.Task[Outcome]:
    """``ticket`` run in a task, once its server has started it (30 s at most)."""
    started = asyncio.Event()

    async def on_event(event: object) -> None:
        if isinstance(event, Started):
            started.set()

    slot = await fleet.slot(ticket)
    assert slot is not None
    run = asyncio.create_task(fleet.run(ticket, slot, on_submit=record_nothing, on_event=on_event))
    async with asyncio.timeout(30):
        await started.wait()
    return run

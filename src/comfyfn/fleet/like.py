"""What a runner of jobs needs of a fleet (:class:`FleetLike`): the job store's worker
(:class:`comfyfn.jobs.Worker`) depends on this, not on :class:`~comfyfn.fleet.Fleet`, so
tests give it a fake fleet that mypy checks against the same shape."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from comfyfn.client import AsyncClient
from comfyfn.fleet.outcomes import Outcome
from comfyfn.fleet.pool import Pool
from comfyfn.fleet.tickets import OnEvent, OnSubmit, Slot, Ticket

__all__ = ["FleetLike"]


class FleetLike(Protocol):
    """Slots on servers, runs on them, and their health (see :class:`~comfyfn.fleet.Fleet`)."""

    pool: Pool
    clients: dict[str, AsyncClient]  #: each server's client (the warm-up runs through them)
    #: told each server that goes down (False) or comes back (True): its URL
    on_health: Callable[[str, bool], None]

    async def __aenter__(self) -> FleetLike: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def healthy(self) -> bool: ...

    async def probe(self) -> None: ...

    async def slot(
        self,
        ticket: Ticket,
        *,
        stop: asyncio.Event | None = None,
        give_up_after: float | None = None,
    ) -> Slot | None: ...

    async def run(
        self,
        ticket: Ticket,
        slot: Slot,
        *,
        on_submit: OnSubmit,
        on_event: OnEvent | None = None,
        validate: bool = True,
    ) -> Outcome: ...

    async def cancel(self, ticket: Ticket) -> str: ...

    async def withdraw_waiting(self, tickets: Iterable[Ticket], timeout: float) -> set[str]: ...

"""A stand-in fleet for the job store's worker (a ``FleetLike``, checked by mypy): one fake
server whose runs end as a test says, and a gateway's worker started on it over a real
SQLite store, its claims spied on."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from comfyfn.client import AsyncClient
from comfyfn.errors import ComfyError
from comfyfn.events import Progress
from comfyfn.fleet import OnEvent, OnSubmit, Outcome, Pool, Refused, Slot, Ticket
from comfyfn.gateway.metrics import Metrics
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.served_jobs import gateway_worker
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.jobs import Store
from comfyfn.storage import open_storage
from comfyfn.workflow import Workflow
from tests.support.graphs import sleep_graph
from tests.support.polling import await_until

SERVER = "http://fake-comfyui"


class FakeFleet:
    """One server with ``slots`` slots. A run records its ticket, reports progress and
    then ends as ``outcome`` says once ``finish`` is set (never, by default)."""

    def __init__(self, slots: int = 2, steps: int = 0) -> None:
        self.pool = Pool([SERVER], slots - 1)
        self.clients: dict[str, AsyncClient] = {}  #: no real server (nothing to warm up)
        self.on_health: Callable[[str, bool], None] = lambda _url, _up: None
        self.steps = steps
        self.runs: list[str] = []
        self.finish = asyncio.Event()
        self.outcome: Callable[[Any], Outcome] = lambda ticket: Refused(
            ComfyError("no outcome"), SERVER
        )

    async def __aenter__(self) -> FakeFleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def probe(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    async def slot(
        self,
        ticket: Ticket,
        *,
        stop: asyncio.Event | None = None,
        give_up_after: float | None = None,
    ) -> Slot | None:
        return Slot(await self.pool.acquire(), attach=False)

    async def cancel(self, ticket: Ticket) -> str:
        return "absent"

    async def withdraw_waiting(self, tickets: Iterable[Ticket], timeout: float) -> set[str]:
        return set()  # nothing queued on a server: every run is the running one

    async def run(
        self,
        ticket: Ticket,
        slot: Slot,
        *,
        on_submit: OnSubmit,
        on_event: OnEvent | None = None,
        validate: bool = True,
    ) -> Outcome:
        try:
            ticket.prompt_id, ticket.server = f"prompt-{len(self.runs)}", slot.url
            await on_submit(slot.url, ticket.prompt_id)
            self.runs.append(ticket.prompt_id)
            for step in range(1, self.steps + 1):
                assert on_event is not None
                await on_event(Progress(ticket.prompt_id, "2", step, self.steps))
            await self.finish.wait()
            return self.outcome(ticket)
        finally:
            self.pool.release(slot.url)


class ClaimSpy:
    """Records how many jobs each ``claim_jobs`` call took; call number ``pause_at`` then
    waits, after looking, until ``resume`` is set."""

    def __init__(self, store: Store, monkeypatch) -> None:
        self.calls: list[int] = []
        self.pause_at: int | None = None
        self.inside, self.resume = threading.Event(), threading.Event()
        real = store.claim_jobs

        def claim_jobs(*args, **kwargs):
            claimed = real(*args, **kwargs)
            self.calls.append(len(claimed))
            if len(self.calls) == self.pause_at:
                self.inside.set()
                if not self.resume.wait(30):
                    raise TimeoutError("the test never resumed the claim")
            return claimed

        monkeypatch.setattr(store, "claim_jobs", claim_jobs)


@contextlib.asynccontextmanager
async def started(tmp_path, fleet: FakeFleet, monkeypatch):
    """A started worker on a SQLite store in ``tmp_path``, with its claims spied on, once
    its first look at the (empty) queue is done."""
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    spy = ClaimSpy(store, monkeypatch)
    settings = GatewaySettings(
        servers=(SERVER,), db_url=store.url, storage=tmp_path / "files", heartbeat=60
    )
    registry = Registry()
    registry.add("sleep", Workflow.load(sleep_graph(1), name="sleep"))
    storage = open_storage(settings.storage)
    worker = gateway_worker(store, registry, settings, Metrics(), storage, fleet=fleet)
    await worker.start()
    try:
        await await_until(lambda: spy.calls, 10, "the first look at the queue")
        yield worker, spy
    finally:
        fleet.finish.set()
        spy.resume.set()
        await worker.stop()
        store.close()


def new_job(store: Store, **kwargs):
    return store.create_job(key_id="key_1", workflow="sleep", params={}, **kwargs)[0]

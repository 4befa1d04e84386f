"""Running jobs on a pool of ComfyUI servers: the one implementation batch and gateway share.

A :class:`Fleet` holds one client per server, the :class:`~comfyfn.fleet.pool.Pool` of slots,
and a health loop. A caller (the batch runner, the job store's worker) asks for a
:meth:`Fleet.slot` — the job's own server if it was submitted earlier and that server is up
(re-attach), else a slot the pool gives it (by priority, then where its models are loaded,
then the emptiest healthy server) — then :meth:`Fleet.run`s the job
there and gets one :mod:`outcome <comfyfn.fleet.outcomes>` back. What to record, retry or
report stays with the caller; how jobs meet servers is decided here:

- the job's server and prompt id are handed to ``on_submit`` *before* it is submitted, so a
  crash at any point can be re-attached instead of run twice;
- a prompt the server accepted is never posted again while that server still knows it: a
  read that fails while the server still answers its health check is re-attached on the
  same server (a slow ``/history`` never makes a job run twice), and once the re-attaches
  are spent the job fails naming what could not be read, rather than running again;
- a submission the server did not take (a lost request, an answer that is not ComfyUI's,
  e.g. an auth proxy's login page) moves the job, counted against its retries;
- a server that fails or hangs is taken out; the job moves, and its prompt id is remembered
  as an *orphan* of that server, whose removal is asked for at once (with no read timeout:
  a hung server reads it first when it resumes); the server is put back only once a removal
  of every orphan is answered (the one running interrupted), so a moved job does not run
  there too. The move counts against the retries of the job that ran there (or was next),
  not of the jobs queued behind it;
- a pool that has *never* answered since it started (a wrong URL, nothing listening) fails
  fast, after :attr:`FleetSettings.unreached_after` seconds, naming every URL and why; only
  servers that went down mid-run are waited for (up to the caller's ``give_up_after``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx

from comfyfn._tasks import cancel_and_wait
from comfyfn.client import AsyncClient, AsyncJob, WorkflowSource, public_url
from comfyfn.errors import (
    ComfyError,
    GenerationTimeout,
    Interrupted,
    ServerUnreachable,
    TransportError,
)
from comfyfn.events import Event, Failed, FinalEvent, Queued, Stopped, Succeeded
from comfyfn.fleet._orphans import Orphans, withdraw_waiting
from comfyfn.fleet.outcomes import Cancelled, Done, Lost, Moved, Outcome, Refused
from comfyfn.fleet.pool import Pool
from comfyfn.fleet.tickets import FleetSettings, OnEvent, OnSubmit, Slot, Ticket
from comfyfn.workflow import Workflow

__all__ = ["Fleet"]

log = logging.getLogger("comfyfn.fleet")


class Fleet:
    """Clients, slots and health for ``servers``; use as ``async with Fleet(...) as fleet``."""

    def __init__(self, servers: Sequence[str], settings: FleetSettings | None = None) -> None:
        self.settings = settings or FleetSettings()
        #: the servers as the fleet shows them (keys everywhere: slots, outcomes, records,
        #: logs): :func:`~comfyfn.client.public_url`, without user, password or query
        self._given = {public_url(url): url for url in servers}
        self.servers = list(self._given)
        self.pool = Pool(
            self.servers,
            self.settings.prime,
            most=self.settings.most,
            by_model=self.settings.by_model,
        )
        self.clients: dict[str, AsyncClient] = {}
        self._orphans = Orphans(self.pool, lambda url: self._client(url, None))
        self._health: asyncio.Task[None] | None = None
        self.on_health: Callable[[str, bool], None] = lambda _url, _up: None
        self.reached = False  #: whether any server has answered since the fleet opened

    async def __aenter__(self) -> Fleet:
        async with contextlib.AsyncExitStack() as stack:
            for url in self.servers:
                client = self._client(url, self.settings.http_timeout)
                await client.open()
                stack.push_async_callback(client.aclose)
                self.clients[url] = client
            stack.pop_all()  # all open: __aexit__ closes them
        self._health = asyncio.create_task(self._health_loop(), name="comfyfn-fleet-health")
        return self

    def _client(self, url: str, read_timeout: float | None) -> AsyncClient:
        return AsyncClient(
            self._given[url],
            timeout=httpx.Timeout(read_timeout, connect=self.settings.connect),
            retries=1,
            check_interval=2.0,
            comfy_org_key=self.settings.comfy_org_key,
        )

    async def __aexit__(self, *exc: object) -> None:
        tasks = [*self._orphans.removals, *([self._health] if self._health else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Each client closes on its own, within the connect timeout: a hung server must not
        # hold up the end (its websocket's closing handshake would wait far longer).
        closing = [
            _close_within(client, self.settings.connect)
            for client in [*self.clients.values(), *self._orphans.clients.values()]
        ]
        for failure in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(failure, Exception):
                log.info("closing a client: %r", failure)

    # -- servers ---------------------------------------------------------------------------

    def healthy(self) -> bool:
        return any(s.healthy for s in self.pool.states.values())

    async def probe(self) -> None:
        """Ask every server once; those that do not answer are taken out until they do."""
        for url, client in self.clients.items():
            try:
                await client.system_stats()
                self.reached = True
            except ComfyError:
                await self._down(url)

    async def workflow(
        self,
        source: WorkflowSource | Workflow,
        *,
        give_up_after: float,
        stop: asyncio.Event | None = None,
    ) -> Workflow | None:
        """The workflow converted and typed with the first server that gives its definitions;
        None once ``stop`` is set. Servers are asked again until one answers: for
        :attr:`FleetSettings.unreached_after` seconds if none has ever answered (then
        :class:`~comfyfn.ServerUnreachable` names each URL and its error), else for
        ``give_up_after`` seconds."""
        started = time.monotonic()
        stop = stop or asyncio.Event()
        while True:
            errors: dict[str, ComfyError] = {}
            for url, client in self.clients.items():
                try:
                    wf = await _unless(stop, client.workflow(source))
                except TransportError as exc:
                    errors[url] = exc
                    await self._down(url)
                    continue
                if wf is not None:
                    self.reached = True
                return wf
            waited = time.monotonic() - started
            if not self.reached and waited >= self.settings.unreached_after:
                raise ServerUnreachable(_unreachable(errors, waited))
            if waited > give_up_after:
                raise ComfyError(
                    f"no server gave its node definitions for {give_up_after:g}s: "
                    + "; ".join(map(str, errors.values()))
                )
            if await _unless(stop, asyncio.sleep(self.settings.health_interval, True)) is None:
                return None

    async def _down(self, url: str) -> None:
        was_up = self.pool.states[url].healthy
        self.pool.mark_down(url)
        if was_up:
            self.on_health(url, False)

    # -- slots -----------------------------------------------------------------------------

    async def slot(
        self,
        ticket: Ticket,
        *,
        stop: asyncio.Event | None = None,
        give_up_after: float | None = None,
    ) -> Slot | None:
        """Where ``ticket`` runs next; None once ``stop`` is set or every server has been
        down for ``give_up_after`` seconds."""
        server, prompt_id = ticket.server, ticket.prompt_id
        if prompt_id and server in self.clients:
            state = self.pool.states[server]
            if state.healthy:
                self.pool.take(server, ticket.want)
                return Slot(server, attach=True)
            self._orphans.add(server, prompt_id)  # its server is down: it must not run there too
        ticket.prompt_id = ticket.server = None
        stopped = stop or asyncio.Event()
        placed = self.pool.request(ticket.want)
        try:
            while not (placed.done() or stopped.is_set() or self._given_up(give_up_after)):
                await asyncio.wait({placed}, timeout=self.settings.health_interval)
        except BaseException:
            self.pool.withdraw(placed)
            raise
        if placed.done() and not stopped.is_set():
            return Slot(placed.result(), attach=False)
        self.pool.withdraw(placed)  # a slot given meanwhile goes to the next job
        return None

    def _given_up(self, give_up_after: float | None) -> bool:
        return give_up_after is not None and self.pool.all_down_for() > give_up_after

    async def cancel(self, ticket: Ticket) -> str:
        """Dequeue or interrupt ``ticket`` on its server; whoever follows it then sees it end
        as :class:`~comfyfn.fleet.outcomes.Cancelled`. ``"absent"`` if it is not there."""
        ticket.cancel_asked = True
        if not (ticket.prompt_id and ticket.server in self.clients):
            return "absent"
        return await self.clients[ticket.server].cancel(ticket.prompt_id)

    async def cancel_all(self, tickets: Iterable[Ticket]) -> None:
        """Cancel ``tickets`` on their servers, each server's at once: every one still queued
        is dequeued first, then the running one is interrupted, so none of ours starts
        running in between (as one cancel after another would let the next queued one do).
        A server that fails to answer is logged; the others go on."""
        on: dict[str, list[str]] = {}
        for ticket in tickets:
            ticket.cancel_asked = True
            if ticket.prompt_id and ticket.server in self.clients:
                on.setdefault(ticket.server, []).append(ticket.prompt_id)

        async def cancel_on(url: str, prompt_ids: list[str]) -> None:
            client = self.clients[url]
            await client.delete_from_queue(*prompt_ids)
            for prompt_id in prompt_ids:
                await client.cancel(prompt_id)

        ends = await asyncio.gather(*(cancel_on(*i) for i in on.items()), return_exceptions=True)
        for url, failure in zip(on, ends, strict=True):
            if isinstance(failure, Exception):
                log.warning("cancelling our jobs on %s: %s", url, failure)

    async def withdraw_waiting(self, tickets: Iterable[Ticket], timeout: float) -> set[str]:
        """Take ``tickets`` that have not started out of their servers' queues (within
        ``timeout`` seconds: then what was taken so far is unknown and none counts); the
        prompt ids gone from them. Those running are left, to be re-attached to."""
        on: dict[str, set[str]] = {}
        for ticket in tickets:
            if ticket.prompt_id and ticket.server in self.clients:
                on.setdefault(ticket.server, set()).add(ticket.prompt_id)
        if not on:
            return set()
        try:
            async with asyncio.timeout(timeout):
                return await withdraw_waiting(self.clients, on)
        except TimeoutError:
            log.warning("the servers did not answer in %gs: our waiting prompts stay", timeout)
            return set()

    # -- one job ---------------------------------------------------------------------------

    async def run(
        self,
        ticket: Ticket,
        slot: Slot,
        *,
        on_submit: OnSubmit,
        on_event: OnEvent | None = None,
        validate: bool = True,
    ) -> Outcome:
        """Run (or follow) ``ticket`` on its slot until it ends; the slot is freed after."""
        url, busy, turnaround, ok = slot.url, 0.0, None, False
        try:
            outcome = await self._follow(ticket, slot, on_submit, on_event, validate)
            if isinstance(outcome, Done):
                timings = outcome.generation.timings
                busy, ok = timings.executed, True
                if not slot.attach:  # a re-attached job's times include our absence
                    turnaround = max(0.0, timings.total - timings.queued - timings.executed)
            return outcome
        finally:
            self.pool.release(url, busy=busy, turnaround=turnaround, ok=ok)

    async def _follow(
        self,
        ticket: Ticket,
        slot: Slot,
        on_submit: OnSubmit,
        on_event: OnEvent | None,
        validate: bool,
    ) -> Outcome:
        url, attach = slot.url, slot.attach
        client = self.clients[url]
        if not attach:
            ticket.prompt_id, ticket.server = str(uuid.uuid4()), url
            ticket.attempts += 1
            await on_submit(url, ticket.prompt_id)
        prompt_id = ticket.prompt_id
        assert prompt_id is not None
        started = time.monotonic()
        reattaches = self.settings.reattach
        seen = _Seen()
        job: AsyncJob | None = None
        while True:
            try:
                if job is None:
                    job = await self._job(client, ticket, prompt_id, attach, validate)
                    # a cancel asked while the submission was under way: once it is there
                    if ticket.cancel_asked and await _cancel_quietly(client, prompt_id) == (
                        "dequeued"
                    ):
                        return _taken_off(prompt_id, url)  # it never ran: nothing to follow
                end = await _follow_events(job, seen, on_event)
                outcome = _outcome(end, url, time.monotonic() - started)
                if isinstance(outcome, Lost) and ticket.cancel_asked:
                    return Cancelled(outcome.error, url)  # taken out of the queue by the cancel
                return outcome
            except ServerUnreachable as exc:  # nothing reached the server
                return await self._moved(ticket, url, exc, charged=seen.at_front)
            except TransportError as exc:
                if job is None and not attach:  # the server did not take the submission
                    return await self._moved(ticket, url, exc, charged=True)
                if not await self._answers(client):
                    return await self._moved(ticket, url, exc, charged=seen.at_front)
                if reattaches == 0:  # it knows the job: running it again would run it twice
                    log.warning("giving up on following %s on %s: %s", prompt_id, url, exc)
                    return Refused(exc, url)
                log.info("re-attaching %s on %s after: %s", prompt_id, url, exc)
                reattaches, attach = reattaches - 1, True  # follow the same job again
            except GenerationTimeout as exc:
                return await self._moved(ticket, url, exc, charged=seen.at_front)
            except ComfyError as exc:
                return Refused(exc, url)

    async def _job(
        self, client: AsyncClient, ticket: Ticket, prompt_id: str, attach: bool, validate: bool
    ) -> AsyncJob:
        """Submit the ticket as ``prompt_id``, or (``attach``) follow it where it already is;
        either way the job is left on the server if we stop following it."""
        timeout = self.settings.job_timeout
        if attach:
            return await client.attach(
                prompt_id, workflow=ticket.workflow, timeout=timeout, cancel_on_exit=False
            )
        return await client.submit_graph(
            ticket.workflow,
            prompt_id=prompt_id,
            timeout=timeout,
            validate=validate,
            cancel_on_exit=False,
        )

    async def _answers(self, client: AsyncClient) -> bool:
        try:
            await client.system_stats()
        except ComfyError:
            return False
        return True

    async def _moved(self, ticket: Ticket, url: str, exc: ComfyError, *, charged: bool) -> Moved:
        """``url`` failed under ``ticket``: take the server out and move the job; the move
        counts against the job's retries only if ``charged``."""
        log.warning("server %s failed under job %s: %s", url, ticket.prompt_id, exc)
        if ticket.prompt_id:
            self._orphans.add(url, ticket.prompt_id)
        if not charged:
            ticket.attempts -= 1
        await self._down(url)
        return Moved(exc, url)

    # -- health ----------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval)
            for url in self.pool.down():
                if await self._orphans.recovered(url, self.clients[url]):
                    self.reached = True
                    self.pool.mark_up(url)
                    self.on_health(url, True)


T = TypeVar("T")


async def _cancel_quietly(client: AsyncClient, prompt_id: str) -> str | None:
    """Cancel ``prompt_id`` on ``client``'s server: what the cancel did (``"dequeued"``...),
    or None if it failed, which is logged (the job's following sees how it ends)."""
    try:
        return await client.cancel(prompt_id)
    except ComfyError as exc:
        log.warning("cancelling %s on %s: %s", prompt_id, client.server, exc)
        return None


def _taken_off(prompt_id: str, url: str) -> Cancelled:
    """A prompt our cancel took off the queue before it ran: cancelled, at once. Following
    it would wait to learn it is gone from a queue that said so already (past the batch's
    wait for its cancelled jobs on a busy machine: the row was left submitted)."""
    error = Interrupted(
        "cancelled: taken off the queue before it ran", server=url, prompt_id=prompt_id
    )
    return Cancelled(error, url)


async def _close_within(client: AsyncClient, seconds: float) -> None:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
    async with asyncio.timeout(seconds):
        await client.aclose()


async def _unless(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None (``work`` cancelled) as soon as ``stop`` is set."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the caller's own cancellation: it goes on, not the task's error
        stopped.cancel()
        with contextlib.suppress(Exception):
            await cancel_and_wait(task)
        raise
    stopped.cancel()
    if not task.done():
        await cancel_and_wait(task)
    return None if task.cancelled() else task.result()


def _unreachable(errors: dict[str, ComfyError], waited: float) -> str:
    """One sentence naming every server of a pool that never answered, and why."""
    reasons = "; ".join(f"{url}: {_reason(url, exc)}" for url, exc in errors.items())
    return (
        f"no ComfyUI server answered in {waited:.0f}s ({reasons}); check the URLs "
        "(--server) and that ComfyUI runs there"
    )


def _reason(url: str, exc: ComfyError) -> str:
    """The error without the URL it already names, and without the engine hint."""
    text = str(exc).split(" (is it running?", 1)[0]
    return text.replace(f"cannot reach ComfyUI at {url}: ", "")


@dataclass
class _Seen:
    """What following a job has shown: whether it reached the front of its server's queue
    (it ran, or was next). A server that fails under a job that never did was busy with
    others' jobs: the move is not this job's doing."""

    at_front: bool = False

    def note(self, event: Event) -> None:
        self.at_front |= not (isinstance(event, Queued) and event.position > 0)


async def _follow_events(job: AsyncJob, seen: _Seen, on_event: OnEvent | None) -> FinalEvent:
    """Follow ``job`` to its final event, noting each in ``seen`` and handing the others to
    ``on_event``."""
    async with contextlib.aclosing(job.events()) as events:
        async for event in events:
            seen.note(event)
            if isinstance(event, Succeeded | Failed | Stopped):
                return event
            if on_event is not None:
                await on_event(event)
    raise AssertionError("a job's events end with Succeeded, Failed or Stopped")


def _outcome(end: FinalEvent, url: str, seconds: float) -> Outcome:
    if isinstance(end, Succeeded):
        return Done(end.generation, url, seconds)
    if isinstance(end, Stopped):
        return Lost(end.error, url) if end.error.lost else Cancelled(end.error, url)
    return Refused(end.error, url)

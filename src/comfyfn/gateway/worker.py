"""Running the gateway's jobs on the fleet: claim, run or re-attach, store, notify.

Jobs live in the store, not in memory: a worker claims one (atomically, so two gateway
replicas never run the same job), records the server and its prompt id *before* submitting,
and heartbeats while it runs. A job whose worker died (no heartbeat) is claimed by another
worker or by the restarted one and re-attached by prompt id on its server — or run again if
the server lost it. On a graceful stop the worker hands its jobs back at once (they stay on
their servers and are re-attached). Servers, slots, health and moving jobs off failed
servers are the fleet's (:mod:`comfyfn.fleet`), shared with the batch runner.

The routes of this process hand new jobs to :meth:`Worker.submit`: with a slot free and no
job queued ahead, a job is created already claimed by this worker and starts at once (no claim
round trip); else it is queued and the claim loop woken. The claim loop otherwise sleeps until
a slot frees up or :data:`IDLE_POLL` passes (jobs queued by other replicas, stale ones).
Every change the worker stores is also published on the process's :class:`JobBus`, so the
routes following a job wake at once. Progress goes to the bus at every step and to the store
at most every :data:`PROGRESS_WRITE_INTERVAL` seconds (what other replicas see).

The store can fail (a database restart, a lock held too long): the claim loop logs and backs
off, ``healthy()`` is False meanwhile (``/readyz`` answers 503), a job's final state is
written as soon as the database is back, and progress updates are skipped while it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from comfyfn.batch.jobs import sharded_prefixes
from comfyfn.errors import ComfyError, ExecutionFailed
from comfyfn.events import Preview, Progress
from comfyfn.fleet import (
    Cancelled,
    Done,
    Event,
    Fleet,
    FleetSettings,
    Lost,
    Moved,
    Outcome,
    Refused,
    State,
    Ticket,
    advance,
    requeue_or_fail,
)
from comfyfn.gateway._outputs import output_files, store_outputs
from comfyfn.gateway.bus import JobBus, JobUpdate
from comfyfn.gateway.metrics import Metrics
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.schema import FileRecord, JobRecord
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.gateway.store import Store
from comfyfn.gateway.uploads import resolve_inputs
from comfyfn.result import Generation
from comfyfn.storage import Storage, StorageError, open_storage
from comfyfn.workflow import Workflow

__all__ = ["IDLE_POLL", "PROGRESS_WRITE_INTERVAL", "Worker"]

log = logging.getLogger("comfyfn.gateway")
T = TypeVar("T")

#: the store's names for the fleet's job states
STORE_STATE = {
    State.PENDING: "queued",
    State.SUBMITTED: "running",
    State.DONE: "succeeded",
    State.FAILED: "failed",
    State.CANCELLED: "cancelled",
}
IDLE_POLL = 0.5  #: seconds between claims while the queue is empty (other replicas' jobs)
PROGRESS_WRITE_INTERVAL = 1.0  #: at most one progress write per job this often
_DB_ERRORS = (SQLAlchemyError, OSError)
_CANCELLED = {"type": "cancelled", "message": "cancelled"}


class Worker:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: GatewaySettings,
        metrics: Metrics,
        bus: JobBus,
        *,
        storage: Storage | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.store, self.registry, self.settings = store, registry, settings
        self.metrics, self.bus = metrics, bus
        #: where outputs go (the application's :attr:`Runtime.storage`)
        self.storage = storage if storage is not None else open_storage(settings.storage)
        self.fleet = fleet or Fleet(
            settings.servers,
            FleetSettings(
                prime=settings.prime,
                http_timeout=settings.http_timeout,
                job_timeout=settings.job_timeout,
                health_interval=1.0,
            ),
        )
        self.running: dict[str, asyncio.Task[None]] = {}
        self.tickets: dict[str, Ticket] = {}
        self.db_ok = True
        self._records: dict[str, JobRecord] = {}  #: the latest stored form of each held job
        self._progress_written: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self._created = False  #: a route of this process queued a job since the last claim
        self._reserved = 0  #: slots held for jobs being created claimed (:meth:`submit`)
        self._starting: set[str] = set()  #: jobs started here, waiting for their slot
        self._tasks: list[asyncio.Task[None]] = []
        self._notifications: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for index, url in enumerate(self.fleet.pool.states):  # /metrics names them by index
            log.info("ComfyUI server %d: %s", index, url)
        await self.fleet.__aenter__()
        await self.fleet.probe()  # readiness must be true from the start, not after a failure
        self._tasks = [
            asyncio.create_task(self._claim_loop()),
            asyncio.create_task(self._heartbeat_loop()),
        ]

    async def stop(self) -> None:
        """Stop claiming; hand every held job back to the queue (it stays on its server, and
        whoever claims it next re-attaches), then close."""
        for task in self._tasks:
            task.cancel()
        held = list(self.running)
        for task in list(self.running.values()):
            task.cancel()
        for task in list(self.running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for job_id in held:
            try:
                await asyncio.to_thread(self.store.release_job, job_id)
                log.warning("shutting down: handed job %s back to the queue", job_id)
            except _DB_ERRORS as exc:
                log.warning("could not hand job %s back (%s); it is taken over later", job_id, exc)
        for task in self._notifications:
            task.cancel()
        await self.fleet.__aexit__(None, None, None)

    def healthy(self) -> bool:
        """Able to work: the store answers and at least one ComfyUI server is up."""
        return self.db_ok and self.fleet.healthy()

    def job_created(self) -> None:
        """A job was queued by this process: claim now, not at the next poll."""
        self._created = True
        self._wakeup.set()

    async def submit(self, **job: Any) -> JobRecord:
        """Store a new job (:meth:`Store.create_job`'s arguments). With a slot free here and
        no job queued ahead, it is created claimed by this worker and starts at once; else it
        is queued and the claim loop woken. Once stored, the job is started or queued even if
        the caller is cancelled meanwhile."""
        reserved = self._free_slots() > 0 and self.healthy()
        if reserved:
            self._reserved += 1  # until the store answers: no claim takes this slot
        claim_for = self.settings.worker_id if reserved else None
        stored = asyncio.ensure_future(
            asyncio.to_thread(self.store.create_job, claim_for=claim_for, **job)
        )
        stored.add_done_callback(functools.partial(self._submitted, reserved))
        record, _ = await asyncio.shield(stored)
        return record

    def _submitted(self, reserved: bool, stored: asyncio.Future[tuple[JobRecord, bool]]) -> None:
        if reserved:
            self._reserved -= 1
        if stored.cancelled() or stored.exception() is not None:
            self._wakeup.set()  # the held slot is free again
            return
        job, created = stored.result()
        if created and job.claimed_by == self.settings.worker_id:
            self._start(job)
        else:  # queued behind others (or an earlier job of the same idempotency key)
            self.job_created()

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job this worker runs: interrupt or dequeue it on its server (the job then
        ends ``cancelled``); before it reaches a server, stop it here. False if not ours."""
        task, ticket = self.running.get(job_id), self.tickets.get(job_id)
        if task is None:
            return False
        if ticket is not None:
            with contextlib.suppress(ComfyError):
                if await self.fleet.cancel(ticket) != "absent":
                    return True
        task.cancel()
        return True

    # -- the store, surviving its outages ----------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store call that must happen: retried with backoff until the database answers."""
        delay = 0.1
        while True:
            try:
                result = await asyncio.to_thread(fn, *args, **kwargs)
            except _DB_ERRORS as exc:
                self._db_failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.db_ok = True
            return result

    def _db_failed(self, exc: BaseException) -> None:
        if self.db_ok:
            log.error("the job store failed (%s); retrying", exc)
        self.db_ok = False
        self.metrics.failures.labels(kind="StoreError").inc()

    def _stored(
        self,
        job: JobRecord,
        files: tuple[FileRecord, ...] = (),
        contents: tuple[bytes, ...] = (),
    ) -> None:
        """``job`` as just stored: remembered while held, and published."""
        if job.id in self.running:
            self._records[job.id] = job
        self.bus.publish(JobUpdate(job, files, contents))

    async def _update(self, job_id: str, **fields: Any) -> None:
        """Store (retrying through outages) and publish a change to a job."""
        self._stored(await self._db(self.store.update_job, job_id, **fields))

    # -- loops -----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        """Claim as many jobs as there are free slots, in one transaction, whenever the
        queue may hold some: the last claim got all it asked for, a route queued one, or
        :data:`IDLE_POLL` passed since the last look (other replicas' jobs)."""
        more, looked = True, -IDLE_POLL
        while True:
            self._wakeup.clear()  # before looking: a wake-up from now on is never lost
            free = self._free_slots()
            wait = max(0.0, looked + IDLE_POLL - time.monotonic())
            if not free or not (more or self._created or wait == 0):
                await self._sleep(wait if free else IDLE_POLL)
                continue
            self._created, looked = False, time.monotonic()
            try:
                jobs = await asyncio.to_thread(
                    self.store.claim_jobs,
                    self.settings.worker_id,
                    limit=free,
                    stale_after=self.settings.stale_after,
                )
            except _DB_ERRORS as exc:
                self._db_failed(exc)
                await self._sleep(1.0)
                continue
            self.db_ok = True
            more = len(jobs) == free
            for job in jobs:
                self._start(job)

    def _free_slots(self) -> int:
        """Slots free for new jobs on healthy servers (less those reserved or being taken)."""
        return max(0, self.fleet.pool.open_slots() - self._reserved - len(self._starting))

    def _start(self, job: JobRecord) -> None:
        """Run a claimed job (or end it at once: cancelled before it ran, unbindable)."""
        self.bus.queue_changed()
        if job.cancel_requested and not job.prompt_id:  # cancelled before it ever ran
            self._spawn(job, self._finish(job, State.CANCELLED, time.monotonic(), error=_CANCELLED))
            return
        self._starting.add(job.id)  # counts as a taken slot until it has one
        self._spawn(job, self._bind_and_run(job))

    async def _bind_and_run(self, job: JobRecord) -> None:
        """Bind the job (reading its input images from storage), then run it; a job that
        cannot be bound fails at once, naming why."""
        workflow = await self._bind(job)
        if not isinstance(workflow, Workflow):
            self._starting.discard(job.id)
            await self._finish(job, State.FAILED, time.monotonic(), error=workflow)
            return
        ticket = Ticket(workflow, job.prompt_id, job.server, job.attempts, job.priority)
        self.tickets[job.id] = ticket
        await self._run(job, ticket)

    def _spawn(self, job: JobRecord, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.running[job.id] = task
        self._stored(job)
        task.add_done_callback(lambda _: self._forget_task(job.id))

    def _forget_task(self, job_id: str) -> None:
        self._starting.discard(job_id)
        self.running.pop(job_id, None)
        self.tickets.pop(job_id, None)
        self._records.pop(job_id, None)
        self._progress_written.pop(job_id, None)
        self._wakeup.set()  # a slot is free: claim the next job now

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                await asyncio.to_thread(self.store.heartbeat, self.settings.worker_id)
                asked = await asyncio.to_thread(self.store.cancel_requests, list(self.running))
            except _DB_ERRORS as exc:
                self._db_failed(exc)
                continue
            self.db_ok = True
            for job_id in asked:  # cancels asked through another replica
                await self.cancel(job_id)
            for index, state in enumerate(self.fleet.pool.states.values()):
                self.metrics.queue_depth.labels(server=str(index)).set(state.in_flight)

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job: JobRecord, ticket: Ticket) -> None:
        started = self._progress_written[job.id] = time.monotonic()
        try:
            slot = await self.fleet.slot(ticket)
            self._starting.discard(job.id)
            assert slot is not None  # no stop event and no give-up: it waits for a slot

            async def submitted(url: str, prompt_id: str) -> None:
                await self._update(job.id, server=url, prompt_id=prompt_id, progress=0.0)

            async def on_event(event: object) -> None:
                if isinstance(event, Progress) and event.max:
                    await self._progress(job.id, round(event.value / event.max, 3))
                elif isinstance(event, Preview):  # throttled by the bus
                    self.bus.preview(job.id, event.step, event.image, event.media_type)

            outcome = await self.fleet.run(
                ticket, slot, on_submit=submitted, on_event=on_event, validate=True
            )
            await self._settle(job, ticket, outcome, started)
        except asyncio.CancelledError:
            await self._cancelled_here(job, started)
            raise
        except Exception:  # a bug must not leave the job 'running' for ever
            log.exception("job %s failed inside the gateway", job.id)
            error = {"type": "InternalError", "message": "the gateway failed to run the job"}
            await self._finish(job, State.FAILED, started, error=error)

    async def _bind(self, job: JobRecord) -> Workflow | dict[str, Any]:
        """The job's bound workflow, or the error to store if it cannot be bound. Input
        images are read back from the uploads of the job's key (never into ``job.params``:
        those are published and shown)."""
        served = self.registry.get(job.workflow)
        if served is None:
            return {"type": "WorkflowGone", "message": f"workflow {job.workflow!r} is not served"}
        params = {
            **job.params,
            **sharded_prefixes(served.workflow, f"{job.id[4:6]}/{job.id}", given=job.params),
        }
        try:
            params = await resolve_inputs(
                self.storage,
                served.workflow,
                params,
                key_id=job.key_id,
                max_pixels=self.settings.max_pixels,
            )
            return served.workflow.bind(**params)
        except ComfyError as exc:
            return _error(exc)

    async def _progress(self, job_id: str, fraction: float) -> None:
        """Publish every step; store one now and then (best effort while the db is out)."""
        known = self._records.get(job_id)
        if known is None:
            return
        now = time.monotonic()
        if now - self._progress_written.get(job_id, now) < PROGRESS_WRITE_INTERVAL:
            self._stored(dataclasses.replace(known, progress=fraction))
            return
        self._progress_written[job_id] = now
        with contextlib.suppress(*_DB_ERRORS):
            self._stored(await asyncio.to_thread(self.store.update_job, job_id, progress=fraction))

    async def _settle(
        self, job: JobRecord, ticket: Ticket, outcome: Outcome, started: float
    ) -> None:
        if isinstance(outcome, Moved):
            self.metrics.failures.labels(kind=type(outcome.error).__name__).inc()
        event = requeue_or_fail(outcome.event, ticket.attempts, self.settings.retries)
        if isinstance(outcome, Cancelled) and not await self._cancel_was_asked(job.id):
            outcome = Refused(outcome.error, outcome.server)  # interrupted by someone else
            event = Event.FAIL
        state = advance(State.SUBMITTED, event)
        if isinstance(outcome, Done):
            await self._succeeded(job, outcome.generation, started)
        elif state is State.PENDING:
            assert isinstance(outcome, Moved | Lost)
            await self._requeue(job, ticket, outcome)
        else:
            error = _error(outcome.error)
            await self._finish(job, state, started, error=error, attempts=ticket.attempts)

    async def _cancel_was_asked(self, job_id: str) -> bool:
        fresh = await self._db(self.store.get_job, job_id)
        return fresh is not None and fresh.cancel_requested

    async def _succeeded(self, job: JobRecord, generation: Generation, started: float) -> None:
        """Store every output (still images first), then record them with the success in
        one transaction. The still images' bytes are published at once: a caller who wants
        only those need not wait for them to be stored."""
        outputs = output_files(generation)
        images = tuple(f.data for f in outputs if f.still_image)
        self._stored(self._records.get(job.id, job), contents=images)
        try:
            new_files = await store_outputs(self.storage, job.id, outputs)
        except StorageError as exc:
            log.error("job %s: cannot store its outputs: %s", job.id, exc)
            error = {"type": "StorageError", "message": "the outputs could not be stored"}
            await self._finish(job, State.FAILED, started, error=error)
            return
        done, files = await self._db(
            self.store.complete_job, job.id, new_files, state="succeeded", progress=1.0
        )
        self._stored(done, files, images)
        self._finished(done, started)

    async def _requeue(self, job: JobRecord, ticket: Ticket, outcome: Moved | Lost) -> None:
        log.warning("job %s goes back to the queue: %s", job.id, outcome.error)
        await self._update(
            job.id,
            state="queued",
            server=None,
            prompt_id=None,
            claimed_by=None,
            progress=0.0,
            attempts=ticket.attempts,
        )
        self.bus.queue_changed()

    async def _cancelled_here(self, job: JobRecord, started: float) -> None:
        """Our task was cancelled: by a cancel request (the job ends cancelled), or by a
        shutdown (the job is handed back by :meth:`stop`)."""
        with contextlib.suppress(*_DB_ERRORS):
            fresh = await asyncio.to_thread(self.store.get_job, job.id)
            if fresh is not None and fresh.cancel_requested:
                done = await asyncio.to_thread(
                    self.store.update_job, job.id, state="cancelled", error=_CANCELLED
                )
                self._stored(done)
                self._finished(done, started)

    async def _finish(
        self,
        job: JobRecord,
        state: State,
        started: float,
        *,
        error: dict[str, Any],
        **fields: Any,
    ) -> None:
        """End the job ``failed`` or ``cancelled`` with ``error`` (and other ``fields``)."""
        if state is State.FAILED:
            self.metrics.failures.labels(kind=error["type"]).inc()
        done = await self._db(
            self.store.update_job, job.id, state=STORE_STATE[state], error=error, **fields
        )
        self._stored(done)
        self._finished(done, started)

    def _finished(self, job: JobRecord, started: float) -> None:
        self.metrics.job_seconds.labels(workflow=job.workflow, state=job.state).observe(
            time.monotonic() - started
        )
        if job.webhook:
            task = asyncio.create_task(self._notify(job))
            self._notifications.add(task)
            task.add_done_callback(self._notifications.discard)

    async def _notify(self, job: JobRecord) -> None:
        """POST the finished job to its webhook (signed, pinned to the checked address)."""
        from comfyfn.gateway.webhooks import deliver_webhook, webhook_payload

        assert job.webhook is not None
        secret = await self._db(self.store.secret)
        try:
            await deliver_webhook(
                job.webhook,
                webhook_payload(job),
                secret,
                allow_private=self.settings.allow_private_webhooks,
            )
        except ComfyError as exc:
            self.metrics.failures.labels(kind="WebhookFailed").inc()
            log.warning("webhook for %s failed: %s", job.id, exc)


def _error(error: BaseException) -> dict[str, Any]:
    """What the store keeps of a failure (the API shows callers a sanitised form of it)."""
    detail: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, ExecutionFailed):
        detail.update(
            node_id=error.node_id,
            class_type=error.class_type,
            exception_type=error.exception_type,
        )
    return detail

"""Running the gateway's jobs on the fleet: claim, run or re-attach, store, notify.

Jobs live in the store, not in memory: a worker claims one (atomically, so two gateway
replicas never run the same job), records the server and its prompt id *before* submitting,
and heartbeats while it runs. A job whose worker died (no heartbeat) is claimed by another
worker or by the restarted one and re-attached by prompt id on its server — or run again if
the server lost it. On a graceful stop the worker hands its jobs back at once (they stay on
their servers and are re-attached). Servers, slots, health and moving jobs off failed
servers are the fleet's (:mod:`comfyfn.fleet`), shared with the batch runner.

The store can fail (a database restart, a lock held too long): the claim loop logs and backs
off, ``healthy()`` is False meanwhile (``/readyz`` answers 503), a job's final state is
written as soon as the database is back, and progress updates are skipped while it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from comfyfn.batch.jobs import sharded_prefixes
from comfyfn.errors import ComfyError, ExecutionFailed
from comfyfn.events import Progress
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
    Slot,
    State,
    Ticket,
    advance,
    after_server_failure,
)
from comfyfn.gateway.metrics import Metrics
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.gateway.store import JobRecord, Store
from comfyfn.result import Generation
from comfyfn.workflow._workflow import Workflow

__all__ = ["Worker", "storage_path"]

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
_DB_ERRORS = (SQLAlchemyError, OSError)


class Worker:
    def __init__(
        self, store: Store, registry: Registry, settings: GatewaySettings, metrics: Metrics
    ) -> None:
        self.store, self.registry, self.settings, self.metrics = store, registry, settings, metrics
        self.fleet = Fleet(
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
        self.wakeup = asyncio.Event()
        self.db_ok = True
        self._tasks: list[asyncio.Task[None]] = []
        self._notifications: set[asyncio.Task[None]] = set()
        self._done: dict[str, asyncio.Event] = {}

    @property
    def pool(self):  # the fleet's pool (servers and their health), for /readyz and metrics
        return self.fleet.pool

    async def start(self) -> None:
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

    # -- loops -----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            if not self.fleet.has_free_slot():
                await self._sleep(0.2)
                continue
            try:
                job = await asyncio.to_thread(
                    self.store.claim_job,
                    self.settings.worker_id,
                    stale_after=self.settings.stale_after,
                )
            except _DB_ERRORS as exc:
                self._db_failed(exc)
                await self._sleep(1.0)
                continue
            self.db_ok = True
            if job is None:
                await self._sleep(0.5)
                continue
            if job.cancel_requested and not job.prompt_id:  # cancelled before it ever ran
                error = {"type": "cancelled", "message": "cancelled"}
                self._spawn(job, self._finish(job, State.CANCELLED, time.monotonic(), error=error))
                continue
            workflow = self._bind(job)
            if not isinstance(workflow, Workflow):
                self._spawn(job, self._finish(job, State.FAILED, time.monotonic(), error=workflow))
                continue
            ticket = Ticket(workflow, job.prompt_id, job.server, job.attempts)
            slot = await self.fleet.slot(ticket)
            assert slot is not None  # no stop event and no give-up: it waits for a slot
            self.tickets[job.id] = ticket
            self._spawn(job, self._run(job, ticket, slot))

    def _spawn(self, job: JobRecord, work: Any) -> None:
        task = asyncio.create_task(work)
        self.running[job.id] = task
        task.add_done_callback(lambda _: self._forget_task(job.id))

    def _forget_task(self, job_id: str) -> None:
        self.running.pop(job_id, None)
        self.tickets.pop(job_id, None)
        self.wakeup.set()  # a slot is free: claim the next job now

    async def _sleep(self, seconds: float) -> None:
        self.wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wakeup.wait(), seconds)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                await asyncio.to_thread(self.store.heartbeat, self.settings.worker_id)
                for job_id in list(self.running):
                    job = await asyncio.to_thread(self.store.get_job, job_id)
                    if job is not None and job.cancel_requested:
                        await self.cancel(job_id)
            except _DB_ERRORS as exc:
                self._db_failed(exc)
                continue
            self.db_ok = True
            for url, state in self.fleet.pool.states.items():
                self.metrics.queue_depth.labels(server=url).set(state.in_flight)

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job: JobRecord, ticket: Ticket, slot: Slot) -> None:
        started = time.monotonic()
        try:

            async def submitted(url: str, prompt_id: str) -> None:
                await self._db(
                    self.store.update_job, job.id, server=url, prompt_id=prompt_id, progress=0.0
                )

            outcome = await self.fleet.run(
                ticket,
                slot,
                on_submit=submitted,
                on_event=lambda event: self._progress(job.id, event),
                validate=True,
            )
            await self._settle(job, ticket, outcome, started)
        except asyncio.CancelledError:
            await self._cancelled_here(job, started)
            raise
        except Exception:  # a bug must not leave the job 'running' for ever
            log.exception("job %s failed inside the gateway", job.id)
            error = {"type": "InternalError", "message": "the gateway failed to run the job"}
            await self._finish(job, State.FAILED, started, error=error)

    def _bind(self, job: JobRecord) -> Workflow | dict[str, Any]:
        """The job's bound workflow, or the error to store if it cannot be bound."""
        served = self.registry.get(job.workflow)
        if served is None:
            return {"type": "WorkflowGone", "message": f"workflow {job.workflow!r} is not served"}
        params = {
            **job.params,
            **sharded_prefixes(served.workflow, f"{job.id[4:6]}/{job.id}", given=job.params),
        }
        try:
            return served.workflow.bind(**params)
        except ComfyError as exc:
            return _error(exc)

    async def _progress(self, job_id: str, event: Any) -> None:
        if isinstance(event, Progress) and event.max:
            with contextlib.suppress(*_DB_ERRORS):  # progress is best effort while the db is out
                await asyncio.to_thread(
                    self.store.update_job, job_id, progress=round(event.value / event.max, 3)
                )

    async def _settle(self, job: JobRecord, ticket: Ticket, outcome: Outcome, started: float):
        event = outcome.event
        if isinstance(outcome, Moved):
            self.metrics.failures.labels(kind=type(outcome.error).__name__).inc()
            event = after_server_failure(ticket.attempts, self.settings.retries)
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
            assert not isinstance(outcome, Done)
            await self._finish(job, state, started, error=_error(outcome.error))

    async def _cancel_was_asked(self, job_id: str) -> bool:
        fresh = await self._db(self.store.get_job, job_id)
        return fresh is not None and fresh.cancel_requested

    async def _succeeded(self, job: JobRecord, generation: Generation, started: float) -> None:
        try:
            files = await asyncio.to_thread(self._store_files, job.id, generation)
        except OSError as exc:  # disk full, read-only: the job fails, the gateway goes on
            log.error("job %s: cannot store its outputs: %s", job.id, exc)
            error = {"type": "StorageError", "message": "the outputs could not be stored"}
            await self._finish(job, State.FAILED, started, error=error)
            return
        await self._finish(job, State.DONE, started, outputs=files)

    async def _requeue(self, job: JobRecord, ticket: Ticket, outcome: Moved | Lost) -> None:
        log.warning("job %s goes back to the queue: %s", job.id, outcome.error)
        await self._db(
            self.store.update_job,
            job.id,
            state="queued",
            server=None,
            prompt_id=None,
            claimed_by=None,
            progress=0.0,
            attempts=ticket.attempts,
        )

    async def _cancelled_here(self, job: JobRecord, started: float) -> None:
        """Our task was cancelled: by a cancel request (the job ends cancelled), or by a
        shutdown (the job is handed back by :meth:`stop`)."""
        with contextlib.suppress(*_DB_ERRORS):
            fresh = await asyncio.to_thread(self.store.get_job, job.id)
            if fresh is not None and fresh.cancel_requested:
                error = {"type": "cancelled", "message": "cancelled"}
                await asyncio.to_thread(
                    self.store.update_job, job.id, state="cancelled", error=error
                )
                self._finished(job, "cancelled", started)

    async def _finish(self, job: JobRecord, state: State, started: float, **fields: Any) -> None:
        name = STORE_STATE[state]
        if state is State.FAILED and fields.get("error"):
            self.metrics.failures.labels(kind=fields["error"]["type"]).inc()
        progress = {"progress": 1.0} if state is State.DONE else {}
        await self._db(self.store.update_job, job.id, state=name, **progress, **fields)
        self._finished(job, name, started)

    def finished_event(self, job_id: str) -> asyncio.Event:
        """Set when this process finishes ``job_id`` (callers still re-read the store)."""
        return self._done.setdefault(job_id, asyncio.Event())

    def forget(self, job_id: str) -> None:
        self._done.pop(job_id, None)

    def _finished(self, job: JobRecord, state: str, started: float) -> None:
        self.metrics.job_seconds.labels(workflow=job.workflow, state=state).observe(
            time.monotonic() - started
        )
        event = self._done.pop(job.id, None)
        if event is not None:
            event.set()
        if job.webhook:
            task = asyncio.create_task(self._notify(job.id))
            self._notifications.add(task)
            task.add_done_callback(self._notifications.discard)

    def _store_files(self, job_id: str, generation: Generation) -> list[str]:
        from comfyfn._files import write_atomic

        folder = self.settings.storage / job_id
        ids = []
        for i, image in enumerate(generation.images):
            data = image.png_bytes()
            path = folder / f"{i}.png"
            write_atomic(path, data)
            record = self.store.add_file(
                job_id=job_id,
                path=str(path),
                content_type="image/png",
                size=len(data),
                etag=hashlib.sha256(data).hexdigest()[:32],
            )
            ids.append(record.id)
        return ids

    async def _notify(self, job_id: str) -> None:
        """POST the finished job to its webhook (signed, pinned to the checked address)."""
        from comfyfn.gateway.webhooks import deliver_webhook, webhook_payload

        job = await self._db(self.store.get_job, job_id)
        if job is None or not job.webhook:
            return
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
            log.warning("webhook for %s failed: %s", job_id, exc)


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


def storage_path(settings: GatewaySettings, path: str) -> Path | None:
    """The stored file's path if it lies inside the storage folder (no traversal)."""
    root = settings.storage.resolve()
    candidate = Path(path).resolve()
    return candidate if candidate.is_relative_to(root) else None

"""One job's life in a worker, from its slot on a server to its final state, its files
and its webhook; and the worker's writes to the store (through outages, fenced by its
claim). The methods of :class:`comfyfn.jobs.worker.Worker` (see there).

A job is an API job (a workflow the gateway serves, bound by the worker's
:class:`~comfyfn.jobs.hooks.ApiJobs`; its outputs go to their storage under
``<job id>/<i>.<ext>``) or a batch row (``key_id``
:data:`~comfyfn.jobs.store.BATCH_KEY`: its graph comes bound in its params; its images go
where its ``target`` says — the batch's folder or ``s3://`` URL, under the batch's own names,
``images/<stem>.png``). :meth:`JobLife._placed` decides both; one writer writes them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from comfyfn.errors import ComfyError, ExecutionFailed
from comfyfn.events import Preview, Progress
from comfyfn.fleet import (
    Cancelled,
    CancelledBy,
    Done,
    FleetLike,
    Lost,
    Moved,
    Outcome,
    State,
    Ticket,
    settle,
)
from comfyfn.jobs.bus import JobBus, JobUpdate
from comfyfn.jobs.hooks import ApiJobs, Notify, WorkerMetrics, WorkerSettings
from comfyfn.jobs.schema import Claim, FileRecord, JobRecord, NewFile, StaleClaim
from comfyfn.jobs.store import BATCH_KEY, Store
from comfyfn.outputs import OutputFile, indexed_files, named_files
from comfyfn.result import Generation
from comfyfn.storage import Storage, StorageError, open_storage, put_files
from comfyfn.workflow import Workflow, input_image

__all__ = ["DB_ERRORS", "JobLife", "error_record", "write_outputs"]

log = logging.getLogger("comfyfn.jobs")
T = TypeVar("T")

#: the store's names for the fleet's job states
STORE_STATE = {
    State.PENDING: "queued",
    State.SUBMITTED: "running",
    State.DONE: "succeeded",
    State.FAILED: "failed",
    State.CANCELLED: "cancelled",
}
PROGRESS_WRITE_INTERVAL = 1.0  #: at most one progress write per job this often
DB_ERRORS = (SQLAlchemyError, OSError)
CANCELLED = {"type": "cancelled", "message": "cancelled"}


class JobLife:
    """The job-running half of the worker (it provides these attributes)."""

    store: Store
    settings: WorkerSettings
    api: ApiJobs | None  #: the API jobs this worker can run (None: batch rows only)
    metrics: WorkerMetrics
    notify: Notify | None  #: delivers webhooks
    bus: JobBus
    targets: dict[str, Storage]  #: the batches' output places, opened once each
    fleet: FleetLike
    running: dict[str, asyncio.Task[None]]
    tickets: dict[str, Ticket]
    held: dict[str, Claim]
    db_ok: bool
    _records: dict[str, JobRecord]
    _progress_written: dict[str, float]
    _starting: set[str]
    _notifications: set[asyncio.Task[None]]

    # -- the store, surviving its outages ----------------------------------------------------

    async def _db(
        self, fn: Callable[..., T], *args: Any, fence_for: str | None = None, **kwargs: Any
    ) -> T:
        """A store call that must happen: retried with backoff until the database answers.
        With ``fence_for`` (a job id), each try names the claim held on that job *then* (it
        can change meanwhile: our own job re-claimed after our heartbeats failed)."""
        delay = 0.1
        while True:
            fence = self._fence(fence_for) if fence_for is not None else {}
            try:
                result = await asyncio.to_thread(fn, *args, **fence, **kwargs)
            except DB_ERRORS as exc:
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
        self.metrics.failed("StoreError")

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
        self._stored(await self._db(self.store.update_job, job_id, fence_for=job_id, **fields))

    def _fence(self, job_id: str) -> dict[str, Claim]:
        """The ``fence`` argument of the store's writes to a job of ours. A job we no longer
        hold (taken over, or its task outliving its claim) is not written at all."""
        claim = self.held.get(job_id)
        if claim is None:
            raise StaleClaim(job_id)
        return {"fence": claim}

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
        except StaleClaim:
            raise
        except Exception:  # a bug must not leave the job 'running' for ever
            log.exception("job %s failed inside the worker", job.id)
            error = {"type": "InternalError", "message": "the worker failed to run the job"}
            await self._finish(job, State.FAILED, started, error=error)

    async def _bind(self, job: JobRecord) -> Workflow | dict[str, Any]:
        """The job's bound workflow, or the error to store if it cannot be bound. Input
        images are read back from the uploads of the job's key (never into ``job.params``:
        those are published and shown)."""
        if job.key_id == BATCH_KEY:  # a batch row: bound by its batch
            try:
                bound = Workflow.load(job.params["graph"], name=job.workflow)
                return await self._with_inputs(job, bound)
            except (ComfyError, ValueError, KeyError) as exc:
                return error_record(exc)
        if self.api is None:
            return {"type": "WorkflowGone", "message": f"workflow {job.workflow!r} is not served"}
        return await self.api.bind(job)

    async def _with_inputs(self, job: JobRecord, bound: Workflow) -> Workflow:
        """A batch row's graph with its input images, read back from its batch's output
        place (where the batch keeps them: ``params["inputs"]``, server name → key)."""
        inputs = job.params.get("inputs") or {}
        if not inputs:
            return bound
        storage, _ = await self._target_storage(job)
        uploads = {}
        for server_name, key in inputs.items():
            data = await storage.get(str(key))
            uploads[str(server_name)] = input_image(data, f"{job.params.get('label')}")
        return dataclasses.replace(bound, uploads=uploads)

    async def _target_storage(self, job: JobRecord) -> tuple[Storage, dict[str, Any]]:
        """The output place of a batch row (opened once per place), and its target."""
        raw = await self._db(self.store.job_target, job.id)
        target = json.loads(raw) if raw else None
        if not isinstance(target, dict):
            raise ValueError("the batch row has no target")
        where = str(target["output"])
        if where not in self.targets:
            self.targets[where] = open_storage(where)
        return self.targets[where], target

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
        with contextlib.suppress(*DB_ERRORS):
            self._stored(
                await asyncio.to_thread(
                    self.store.update_job, job_id, progress=fraction, **self._fence(job_id)
                )
            )

    async def _settle(
        self, job: JobRecord, ticket: Ticket, outcome: Outcome, started: float
    ) -> None:
        if isinstance(outcome, Moved):
            self.metrics.failed(type(outcome.error).__name__)
        asked = isinstance(outcome, Cancelled) and await self._cancel_was_asked(job.id)
        state = settle(
            outcome,
            attempts=ticket.attempts,
            retries=self.settings.retries,
            cancelled_by=CancelledBy.OWNER if asked else CancelledBy.SOMEONE_ELSE,
        )
        if isinstance(outcome, Done):
            await self._succeeded(job, outcome, started)
        elif state is State.PENDING:
            assert isinstance(outcome, Moved | Lost)
            await self._requeue(job, ticket, outcome)
        else:
            error = error_record(outcome.error)
            await self._finish(job, state, started, error=error, attempts=ticket.attempts)

    async def _cancel_was_asked(self, job_id: str) -> bool:
        fresh = await self._db(self.store.get_job, job_id)
        return fresh is not None and fresh.cancel_requested

    async def _succeeded(self, job: JobRecord, outcome: Done, started: float) -> None:
        """Store every output (still images first), then record them with the success (and
        the run's times) in one transaction. The still images' bytes are published at once: a
        caller who wants only those need not wait for them to be stored."""
        generation = outcome.generation
        try:
            storage, placed = await self._placed(job, generation)
        except (StorageError, ValueError, KeyError) as exc:
            log.error("job %s: its batch names no usable output place: %s", job.id, exc)
            error = {"type": "StorageError", "message": "the outputs could not be stored"}
            await self._finish(job, State.FAILED, started, error=error)
            return
        images = tuple(f.data for _, f in placed if f.still_image)
        self._stored(self._records.get(job.id, job), contents=images)
        claim = self.held.get(job.id)
        if claim is None or not await self._db(self.store.holds, job.id, claim):
            raise StaleClaim(job.id)  # another worker stores them: do not write them twice
        try:
            new_files = await write_outputs(storage, placed)
        except StorageError as exc:
            log.error("job %s: cannot store its outputs: %s", job.id, exc)
            error = {"type": "StorageError", "message": "the outputs could not be stored"}
            await self._finish(job, State.FAILED, started, error=error)
            return
        done, files = await self._db(
            self.store.complete_job,
            job.id,
            new_files,
            state="succeeded",
            progress=1.0,
            executed=round(generation.timings.executed, 3),
            turnaround=round(outcome.seconds, 3),
            fence_for=job.id,
        )
        self._stored(done, files, images)
        self._finished(done, started)

    async def _placed(
        self, job: JobRecord, generation: Generation
    ) -> tuple[Storage, list[tuple[str, OutputFile]]]:
        """Where the job's outputs go, and each one's key there. An API job: every output,
        to the gateway's storage under ``<job id>/<i>.<ext>``. A batch row: every output, to
        its ``target`` (``{"output": folder or s3 URL, "name": images/<stem>, "deliver"}``)
        under the batch's names (:func:`comfyfn.outputs.named_files`, as ``comfyfn batch``
        names them without a shared queue)."""
        if job.key_id != BATCH_KEY:
            if self.api is None:
                raise ValueError("this worker stores no API job's outputs")
            return self.api.storage, indexed_files(generation, job.id)
        storage, target = await self._target_storage(job)
        named = await asyncio.to_thread(
            named_files, generation, str(target["name"]), target.get("deliver")
        )
        return storage, named

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
        with contextlib.suppress(*DB_ERRORS):
            fresh = await asyncio.to_thread(self.store.get_job, job.id)
            if fresh is not None and fresh.cancel_requested and job.id in self.held:
                done = await asyncio.to_thread(
                    self.store.update_job,
                    job.id,
                    state="cancelled",
                    error=CANCELLED,
                    **self._fence(job.id),
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
            self.metrics.failed(error["type"])
        done = await self._db(
            self.store.update_job,
            job.id,
            state=STORE_STATE[state],
            error=error,
            fence_for=job.id,
            **fields,
        )
        self._stored(done)
        self._finished(done, started)

    def _finished(self, job: JobRecord, started: float) -> None:
        self.metrics.job_ended(job, time.monotonic() - started)
        if job.webhook and self.notify is not None:
            task = asyncio.create_task(self._notify(job))
            self._notifications.add(task)
            task.add_done_callback(self._notifications.discard)

    async def _notify(self, job: JobRecord) -> None:
        """Deliver the finished job's webhook, signed with the store's secret."""
        assert self.notify is not None
        await self.notify(job, await self._db(self.store.secret))


async def write_outputs(storage: Storage, placed: list[tuple[str, OutputFile]]) -> list[NewFile]:
    """Store every ``(key, file)`` in ``storage`` (:func:`comfyfn.storage.put_files`); what
    to record of them. Raises :class:`~comfyfn.storage.StorageError` if one cannot be stored."""
    stored = await put_files(storage, placed)
    return [
        NewFile(s.key, f.content_type, s.size, s.etag)
        for s, (_, f) in zip(stored, placed, strict=True)
    ]


def error_record(error: BaseException) -> dict[str, Any]:
    """What the store keeps of a failure (the API shows callers a sanitised form of it)."""
    detail: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, ExecutionFailed):
        detail.update(
            node_id=error.node_id,
            class_type=error.class_type,
            exception_type=error.exception_type,
        )
    return detail

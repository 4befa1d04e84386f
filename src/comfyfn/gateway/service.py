"""What the routes do with jobs: create (every check, one place), find, cancel, follow.

Every job-creating route goes through :func:`create_job`, which runs the same checks before
anything is stored: texts storable, parameters valid, a prompt not blank, cost limits
(:meth:`GatewaySettings.cost_error`), webhook target, a server ready. Following a job
(:func:`wait_final`, :func:`follow`) wakes on this process's event bus at once and re-reads
the store every :data:`~comfyfn.jobs.bus.FALLBACK_POLL` seconds for jobs another replica
runs; the outputs come from the bus too (records and bytes) when this process ran the job.
What a caller sees of a job is :func:`job_view` (a typed :class:`JobObject`); its outputs'
media types come from the file records this process has seen
(:class:`~comfyfn.gateway._outputs.KnownFiles`), which the functions that fetch a job for a
route (:func:`own_job`, :func:`create_job`, :func:`follow`) load first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from comfyfn.gateway._outputs import stored_key
from comfyfn.gateway.errors import ApiError, public_error
from comfyfn.gateway.registry import Served
from comfyfn.gateway.requests import text_problem
from comfyfn.gateway.responses import JobError, JobObject, JobOutput
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.security import sign_url, webhook_target_error
from comfyfn.jobs.bus import FALLBACK_POLL, JobUpdate
from comfyfn.jobs.schema import TERMINAL, FileRecord, JobRecord, KeyRecord
from comfyfn.outputs import STILL_IMAGE_TYPES
from comfyfn.storage import StorageError, StorageNotFound

__all__ = [
    "TEXT_RULE",
    "cancel_job",
    "create_job",
    "file_url",
    "follow",
    "job_view",
    "load_files",
    "output_bytes",
    "output_records",
    "output_view",
    "own_job",
    "read_output",
    "served_or_404",
    "wait_cancelled",
    "wait_final",
]

log = logging.getLogger("comfyfn.gateway")

TEXT_RULE = "text must be valid Unicode (no lone surrogates) without NUL characters"
#: seconds between checks that a waiting caller is still connected
_CALLER_CHECK = 0.25
#: seconds ``DELETE`` waits for a running job's worker to end it
_CANCEL_WAIT = 10.0


def served_or_404(runtime: Runtime, name: str) -> Served:
    served = runtime.registry.get(name)
    if served is None:
        raise ApiError(
            404,
            f"unknown model/workflow {name!r}; GET /v1/models lists them",
            param="model",
            code="model_not_found",
        )
    return served


def file_url(runtime: Runtime, base_url: str, file_id: str) -> str:
    """A signed, time-limited URL of a stored file."""
    query = sign_url(runtime.store.secret(), file_id, runtime.settings.url_ttl)
    return f"{base_url}/v1/files/{file_id}?{query}"


def output_view(runtime: Runtime, file_id: str, base_url: str) -> JobOutput:
    """One output of a job: id, signed URL and, when known here, media type and size."""
    record = runtime.files.get(file_id)
    return JobOutput(
        id=file_id,
        url=file_url(runtime, base_url, file_id),
        content_type=None if record is None else record.content_type,
        size=None if record is None else record.size,
    )


def job_view(runtime: Runtime, job: JobRecord, base_url: str) -> JobObject:
    """The job as a caller sees it; ``base_url``: the gateway's, for its outputs' signed
    URLs."""
    error = public_error(job.error)
    return JobObject(
        id=job.id,
        workflow=job.workflow,
        state=job.state,
        progress=job.progress,
        params=job.params,
        priority=job.priority,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        outputs=[output_view(runtime, f, base_url) for f in job.outputs],
        error=None if error is None else JobError.model_validate(error),
    )


async def create_job(
    runtime: Runtime,
    key: KeyRecord,
    name: str,
    params: dict[str, Any],
    webhook: str | None,
    idempotency_key: str | None,
    *,
    where: str = "params",
    priority: int = 0,
) -> JobRecord:
    """Check everything, then queue: the one way every route creates a job. Refusals are
    422 naming the parameter (``where`` prefixes parameter names: ``params.width``)."""
    served = served_or_404(runtime, name)
    prefix = f"{where}." if where else ""
    for value, path in (
        (params, where),
        (webhook, "webhook"),
        (idempotency_key, "Idempotency-Key"),
    ):
        bad = text_problem(value, path)
        if bad is not None:
            raise ApiError(422, f"{bad}: {TEXT_RULE}", param=bad, code="invalid_text")
    try:
        values = served.params(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = prefix + ".".join(str(p) for p in first["loc"])
        raise ApiError(422, f"{param}: {first['msg']}", param=param) from None
    if isinstance(values.get("prompt"), str) and not values["prompt"].strip():
        raise ApiError(422, f"{prefix}prompt: the prompt is blank", param=f"{prefix}prompt")
    over = runtime.settings.cost_error(served.effective(values))
    if over is not None:
        raise ApiError(422, over[1], param=prefix + over[0], code="limit_exceeded")
    if webhook:
        problem = await asyncio.to_thread(
            webhook_target_error, webhook, allow_private=runtime.settings.allow_private_webhooks
        )
        if problem:
            raise ApiError(400, problem, param="webhook")
    if runtime.worker is None or not runtime.ready():
        raise runtime.not_ready()
    job = await runtime.worker.submit(
        key_id=key.id,
        workflow=name,
        params=values,
        webhook=webhook,
        idempotency_key=idempotency_key,
        priority=priority,
    )
    await load_files(runtime, job)  # an earlier job of the same idempotency key may be done
    return job


async def own_job(runtime: Runtime, job_id: str, key: KeyRecord) -> JobRecord:
    job = await asyncio.to_thread(runtime.store.get_job, job_id, key.id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}", param="id", code="job_not_found")
    await load_files(runtime, job)
    return job


async def load_files(runtime: Runtime, job: JobRecord) -> None:
    """Make the records of the job's outputs known here (read from the store if not)."""
    missing = runtime.files.missing(job.outputs)
    if missing:
        found = await asyncio.to_thread(lambda: [runtime.store.get_file(f) for f in missing])
        runtime.files.remember(r for r in found if r is not None)


async def fresh(runtime: Runtime, job: JobRecord) -> JobRecord:
    """The job as the store has it now (it is never deleted)."""
    found = await asyncio.to_thread(runtime.store.get_job, job.id)
    return found if found is not None else job


async def cancel_job(runtime: Runtime, job_id: str) -> None:
    """Dequeue the job if no worker holds it, else ask its worker to stop it (this
    replica's at once; another replica's sees ``cancel_requested`` at its heartbeat)."""
    dequeued = await asyncio.to_thread(runtime.store.cancel_if_queued, job_id)
    if dequeued is not None:
        runtime.bus.publish(JobUpdate(dequeued))
        runtime.bus.queue_changed()
        return
    await asyncio.to_thread(runtime.store.request_cancel, job_id)
    if runtime.worker is not None:
        await runtime.worker.cancel(job_id)


async def wait_cancelled(runtime: Runtime, job: JobRecord) -> JobRecord:
    """Cancel the job and wait (up to 10 s) for it to end; the job as it is then."""
    deadline = time.monotonic() + _CANCEL_WAIT
    with runtime.bus.subscribe(job.id) as news:
        await cancel_job(runtime, job.id)
        while job.state not in TERMINAL and time.monotonic() < deadline:
            if await news.wait(min(FALLBACK_POLL / 2, max(0.0, deadline - time.monotonic()))):
                job = news.latest.job if news.latest is not None else job
            else:
                job = await fresh(runtime, job)
    return job if job.state in TERMINAL else await fresh(runtime, job)


async def wait_final(
    runtime: Runtime,
    job: JobRecord,
    gone: Callable[[], Awaitable[bool]],
    *,
    images_suffice: bool = False,
) -> JobUpdate:
    """The job once final, for a caller who waits: 504 after ``sync_timeout``; if the
    caller goes away meanwhile (``gone()``), the job is cancelled (answered 499, to no one).

    ``images_suffice``: a caller who wants only the images' bytes gets them as soon as this
    process's worker has them (an update with ``contents`` while the job is still
    ``running``), without waiting for them to be stored and the job recorded as done."""
    deadline = time.monotonic() + runtime.settings.sync_timeout
    update, polled = JobUpdate(job), time.monotonic()
    with runtime.bus.subscribe(job.id) as news:
        try:
            while update.job.state not in TERMINAL and not (images_suffice and update.contents):
                if await gone():
                    await cancel_job(runtime, job.id)
                    raise ApiError(499, "the caller went away; the job is cancelled")
                if time.monotonic() > deadline:
                    raise ApiError(
                        504,
                        f"the image was not ready within {runtime.settings.sync_timeout:g}s; "
                        f"follow job {job.id} at /v1/jobs/{job.id}",
                        type="server_error",
                    )
                if await news.wait(_CALLER_CHECK):
                    update = news.latest or update
                elif time.monotonic() - polled >= FALLBACK_POLL:  # another replica's job
                    update, polled = JobUpdate(await fresh(runtime, job)), time.monotonic()
            return update
        except asyncio.CancelledError:  # the server dropped the request: the caller is gone
            runtime.in_background(cancel_job(runtime, job.id))
            raise


async def output_records(runtime: Runtime, update: JobUpdate) -> list[FileRecord]:
    """A finished job's still images (PNG/JPEG: what OpenAI's image routes return), as
    published, else from the store. Other outputs (animated images, video, audio, text)
    are left out."""
    if not update.files:
        await load_files(runtime, update.job)
    known: tuple[FileRecord | None, ...] = update.files or tuple(
        runtime.files.get(f) for f in update.job.outputs
    )
    return [r for r in known if r is not None and r.content_type in STILL_IMAGE_TYPES]


async def output_bytes(runtime: Runtime, update: JobUpdate) -> list[bytes]:
    """The bytes of a job's still images: as this process's worker published them, else
    read from storage (a job another replica ran)."""
    if update.contents:
        return list(update.contents)
    return [await read_output(runtime, record) for record in await output_records(runtime, update)]


async def read_output(runtime: Runtime, record: FileRecord) -> bytes:
    """A stored output's bytes: 404 if it is gone, 503 if the store fails (the reason is
    logged, never shown: it may name the store's internals)."""
    key = stored_key(runtime.storage, record.path)
    try:
        if key is None:
            raise StorageNotFound(f"file {record.id} is outside the storage", key=record.path)
        return await runtime.storage.get(key)
    except StorageNotFound:
        raise ApiError(404, f"file {record.id!r} is missing", code="file_not_found") from None
    except StorageError as exc:
        log.error("cannot read file %s: %s", record.id, exc)
        raise ApiError(
            503, "the file store is unavailable; try again shortly", type="server_error"
        ) from None


async def follow(
    runtime: Runtime, job: JobRecord, *, known: tuple[str, float] | None = None
) -> AsyncIterator[tuple[JobRecord, int | None, str]]:
    """The job, while queued its place in the queue, and the id of the latest bus event it
    is as new as (what an event stream may say it has sent): at once, then at every change
    until it is final. ``known``: the (state, progress) the caller has already shown. A
    running job's progress never goes back: the store keeps progress only now and then, so
    its record can be older than what this process published."""
    last: tuple[Any, ...] = ()
    position: int | None = None
    with runtime.bus.subscribe(job.id, queue=True) as news:
        # an id read before the store is: the record read after is at least that new
        event_id = runtime.bus.last_id(job.id)
        current, recount = await fresh(runtime, job), True
        while True:
            if current.state != "queued":
                position = None
            elif recount or news.take_queue_changed():
                position = await asyncio.to_thread(runtime.store.queue_position, current.id)
            now = (current.state, current.progress, position)
            if now != last and not (position is None and _not_newer(current, known)):
                last, known = now, (current.state, current.progress)
                await load_files(runtime, current)
                yield current, position, event_id
            if current.state in TERMINAL:
                return
            if await news.wait(FALLBACK_POLL):
                if news.latest is not None and news.latest_id is not None:
                    runtime.files.remember(news.latest.files)
                    current, event_id = news.latest.job, news.latest_id
                recount = False
            else:  # nothing from this process: the store says what other replicas did
                event_id = runtime.bus.last_id(job.id)
                current, recount = await fresh(runtime, current), True


def _not_newer(job: JobRecord, known: tuple[str, float] | None) -> bool:
    """Whether ``job`` adds nothing to the (state, progress) already shown: the same state,
    and for a running job no more progress."""
    if known is None or known[0] != job.state:
        return False
    return job.state != "running" or job.progress <= known[1]

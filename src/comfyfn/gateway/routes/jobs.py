"""Async jobs: ``POST /v1/jobs`` (202; a ``priority`` above the API key's maximum, set by
``comfyfn keys create --max-priority``, is refused with 422), ``GET``/``DELETE
/v1/jobs/{job_id}`` and the job's server-sent events, ``GET /v1/jobs/{job_id}/events``: one
event per change — ``queued`` (with the job's ``position``: how many jobs of the same key
are ahead of it), ``progress`` while it runs, then ``succeeded``, ``failed`` or
``cancelled`` — each carrying the job as ``GET`` shows it; while it runs on a server started
with ``--preview-method``, ``preview`` events too (``{"job_id", "step", "content_type",
"data"}``, the image in base64, at most ~4 a second; only through the replica that runs the
job: previews are not stored).

Every event has an ``id``. A client reconnecting with ``Last-Event-ID`` (browsers' EventSource
does it by itself) first gets what it missed — the events after that id from this process's
recent history, or, where the history cannot tell (another replica, a restart, too old), the
job's current state from the store — then live events. An id the gateway did not write
counts as one of another process.

If the database becomes unavailable while a stream is open, the stream ends with an
``error`` event, ``{"error": {...}}`` as the API answers a database outage (code
``database_unavailable``), with a ``retry`` of 2 s: the client reconnects with its
``Last-Event-ID`` (and gets a 503 while the outage lasts)."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Request, Response
from sqlalchemy.exc import SQLAlchemyError
from sse_starlette import EventSourceResponse, ServerSentEvent

from comfyfn._tasks import cancel_and_wait
from comfyfn.gateway.dependencies import ApiKey, RuntimeDep
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.requests import JobRequest
from comfyfn.gateway.responses import JobObject, JobStreamEvent
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.service import (
    create_job,
    follow,
    job_view,
    load_files,
    own_job,
    wait_cancelled,
)
from comfyfn.jobs.bus import BusEvent, JobPreview, JobUpdate
from comfyfn.jobs.database import unavailable
from comfyfn.jobs.schema import TERMINAL, JobRecord

router = APIRouter(tags=["jobs"])
log = logging.getLogger("comfyfn.gateway")

#: the event that ends a stream when the database is unavailable (a 503's body)
_DATABASE_UNAVAILABLE = ServerSentEvent(
    data=json.dumps(
        {
            "error": {
                "message": "the job database is unavailable; try again shortly",
                "type": "server_error",
                "param": None,
                "code": "database_unavailable",
            }
        }
    ),
    event="error",
    retry=2000,
)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post("/v1/jobs", status_code=202)
async def post_job(
    body: JobRequest,
    request: Request,
    runtime: RuntimeDep,
    key: ApiKey,
    idempotency_key: str | None = Header(None, max_length=200),
) -> JobObject:
    if body.priority > key.max_priority:
        raise ApiError(
            422,
            f"priority: {body.priority} is over this API key's maximum of {key.max_priority}",
            param="priority",
            code="limit_exceeded",
        )
    job = await create_job(
        runtime,
        key,
        body.workflow,
        body.params,
        body.webhook,
        idempotency_key,
        priority=body.priority,
    )
    return job_view(runtime, job, base_url(request))


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request, runtime: RuntimeDep, key: ApiKey) -> JobObject:
    return job_view(runtime, await own_job(runtime, job_id, key), base_url(request))


@router.delete("/v1/jobs/{job_id}")
async def delete_job(job_id: str, request: Request, runtime: RuntimeDep, key: ApiKey) -> JobObject:
    job = await own_job(runtime, job_id, key)
    if job.state not in TERMINAL:
        job = await wait_cancelled(runtime, job)
    return job_view(runtime, job, base_url(request))


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "The job's server-sent events, until it is final",
            "content": {"text/event-stream": {"schema": JobStreamEvent.model_json_schema()}},
        },
        204: {"description": "The job is final and the client (Last-Event-ID) has its end"},
    },
)
async def job_events(
    job_id: str,
    request: Request,
    runtime: RuntimeDep,
    key: ApiKey,
    last_event_id: str | None = Header(None, max_length=100),
) -> Response:
    job = await own_job(runtime, job_id, key)
    if last_event_id and _has_the_end(runtime, job, last_event_id):
        return Response(status_code=204)  # nothing more: an EventSource stops reconnecting
    return EventSourceResponse(
        _stream(runtime, job, base_url(request), last_event_id),
        headers={"Cache-Control": "no-cache"},
        sep="\n",
    )


def _has_the_end(runtime: Runtime, job: JobRecord, last_event_id: str) -> bool:
    """Whether a client whose last event was ``last_event_id`` has seen the job end."""
    shown = runtime.bus.shown(job.id, last_event_id)
    return job.state in TERMINAL and shown is not None and shown[0] in TERMINAL


def _state_event(
    runtime: Runtime, job: JobRecord, position: int | None, base: str, event_id: str
) -> ServerSentEvent:
    data = job_view(runtime, job, base).model_dump(mode="json")
    if position is not None:
        data["position"] = position
    kind = "progress" if job.state == "running" else job.state
    return ServerSentEvent(data=json.dumps(data), event=kind, id=event_id)


def _preview_event(event: BusEvent) -> ServerSentEvent:
    preview = event.item
    assert isinstance(preview, JobPreview)
    data = {
        "job_id": preview.job_id,
        "step": preview.step,
        "content_type": preview.content_type,
        "data": base64.b64encode(preview.data).decode("ascii"),
    }
    return ServerSentEvent(data=json.dumps(data), event="preview", id=event.id)


async def _stream(
    runtime: Runtime, job: JobRecord, base: str, last_event_id: str | None
) -> AsyncIterator[ServerSentEvent]:
    """:func:`_events`, ended by an ``error`` event if the database becomes unavailable."""
    try:
        async for event in _events(runtime, job, base, last_event_id):
            yield event
    except SQLAlchemyError as exc:
        if not unavailable(exc):
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("events of job %s end: the database is unavailable: %s", job.id, first_line)
        yield _DATABASE_UNAVAILABLE


async def _events(
    runtime: Runtime, job: JobRecord, base: str, last_event_id: str | None
) -> AsyncIterator[ServerSentEvent]:
    """What the client missed since ``last_event_id`` (if given), then live events; the
    state the client already has is not sent again."""
    replayed = runtime.bus.shown(job.id, last_event_id) if last_event_id else None
    for event in (runtime.bus.since(job.id, last_event_id) or []) if last_event_id else []:
        if isinstance(event.item, JobUpdate):
            runtime.files.remember(event.item.files)
            await load_files(runtime, event.item.job)
            yield _state_event(runtime, event.item.job, None, base, event.id)
            replayed = (event.item.job.state, event.item.job.progress)
        else:
            yield _preview_event(event)
    async for sent in _live(runtime, job, base, replayed):
        yield sent


async def _live(
    runtime: Runtime, job: JobRecord, base: str, replayed: tuple[str, float] | None
) -> AsyncIterator[ServerSentEvent]:
    """The job's changes (from :func:`follow`, after the state just replayed) and its
    previews, as they come, until it is final."""
    queue: asyncio.Queue[ServerSentEvent | BaseException | None] = asyncio.Queue()

    async def states() -> None:
        try:
            async for current, position, event_id in follow(runtime, job, known=replayed):
                queue.put_nowait(_state_event(runtime, current, position, base, event_id))
            queue.put_nowait(None)
        except Exception as exc:  # handed to the stream, which raises it
            queue.put_nowait(exc)

    async def previews() -> None:
        with runtime.bus.subscribe(job.id) as news:
            while True:
                await news.wait(3600)
                if (preview := news.take_preview()) is not None:
                    queue.put_nowait(_preview_event(preview))

    tasks = [asyncio.create_task(states()), asyncio.create_task(previews())]
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        await cancel_and_wait(*tasks)

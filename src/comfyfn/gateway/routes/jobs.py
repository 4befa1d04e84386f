"""Async jobs: ``POST /v1/jobs`` (202), ``GET``/``DELETE /v1/jobs/{job_id}`` and the job's
server-sent events, ``GET /v1/jobs/{job_id}/events``: one event per change — ``queued``
(with the job's ``position`` in the queue), ``progress`` while it runs, then ``succeeded``,
``failed`` or ``cancelled`` — each carrying the job as ``GET`` shows it."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from comfyfn.gateway.dependencies import ApiKey, RuntimeDep
from comfyfn.gateway.jobs import create_job, follow, job_json, own_job, wait_cancelled
from comfyfn.gateway.models import JobRequest
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.schema import TERMINAL, JobRecord

router = APIRouter(tags=["jobs"])


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post("/v1/jobs", status_code=202)
async def post_job(
    body: JobRequest,
    request: Request,
    runtime: RuntimeDep,
    key: ApiKey,
    idempotency_key: str | None = Header(None, max_length=200),
) -> dict[str, Any]:
    job = await create_job(runtime, key, body.workflow, body.params, body.webhook, idempotency_key)
    return job_json(runtime, job, base_url(request))


@router.get("/v1/jobs/{job_id}")
async def get_job(
    job_id: str, request: Request, runtime: RuntimeDep, key: ApiKey
) -> dict[str, Any]:
    return job_json(runtime, await own_job(runtime, job_id, key), base_url(request))


@router.delete("/v1/jobs/{job_id}")
async def delete_job(
    job_id: str, request: Request, runtime: RuntimeDep, key: ApiKey
) -> dict[str, Any]:
    job = await own_job(runtime, job_id, key)
    if job.state not in TERMINAL:
        job = await wait_cancelled(runtime, job)
    return job_json(runtime, job, base_url(request))


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: str, request: Request, runtime: RuntimeDep, key: ApiKey
) -> EventSourceResponse:
    job = await own_job(runtime, job_id, key)
    return EventSourceResponse(
        _events(runtime, job, base_url(request)), headers={"Cache-Control": "no-cache"}, sep="\n"
    )


async def _events(runtime: Runtime, job: JobRecord, base: str) -> AsyncIterator[ServerSentEvent]:
    async for current, position in follow(runtime, job):
        data = job_json(runtime, current, base)
        if position is not None:
            data["position"] = position
        kind = "progress" if current.state == "running" else current.state
        yield ServerSentEvent(data=json.dumps(data), event=kind)

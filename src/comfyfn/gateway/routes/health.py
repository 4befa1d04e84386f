"""``/healthz`` (alive), ``/readyz`` (able to take jobs) and Prometheus ``/metrics``."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from comfyfn.gateway.dependencies import ApiKey, RuntimeDep
from comfyfn.gateway.errors import error_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> Any:
    """Ready or not, and why not (no server addresses: no key is needed here): 503 while
    the servers warm up (``warming_up``) or after their warm-up failed (``warm_up_failed``,
    naming the workflows), or while no job can be taken (``not_ready``). A replica without
    a worker (``serve --no-worker``) is ready while its store answers: it can queue jobs
    (see :mod:`comfyfn.gateway.runtime`)."""
    if not runtime.ready():
        return error_response(503, "not ready", "server_error", code="not_ready")
    problem = runtime.warm_up.problem()
    if problem is not None:
        raise problem
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics_route(runtime: RuntimeDep, _: ApiKey) -> Response:
    # the queue's gauges read the store: off the event loop
    body = await asyncio.to_thread(generate_latest, runtime.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

"""``/healthz`` (alive), ``/readyz`` (able to take jobs) and Prometheus ``/metrics``."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from comfyfn.gateway.dependencies import ApiKey, RuntimeDep
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.responses import Alive, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Alive:
    return Alive()


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> Ready:
    """Ready or not, and why not (no server addresses: no key is needed here): 503 while
    the servers warm up (``warming_up``) or after their warm-up failed (``warm_up_failed``,
    naming the workflows), or while no job can be taken (``not_ready``). A replica without
    a worker (``serve --no-worker``) is ready while its store answers: it can queue jobs
    (see :mod:`comfyfn.gateway.runtime`)."""
    if not runtime.ready():
        raise ApiError(503, "not ready", type="server_error", code="not_ready")
    problem = runtime.warm_up.problem()
    if problem is not None:
        raise problem
    return Ready()


@router.get(
    "/metrics",
    response_class=Response,  # (errors are JSON: PlainTextResponse would document them as text)
    responses={
        200: {
            "description": "Prometheus' text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics_route(runtime: RuntimeDep, _: ApiKey) -> Response:
    # the queue's gauges read the store: off the event loop
    body = await asyncio.to_thread(generate_latest, runtime.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

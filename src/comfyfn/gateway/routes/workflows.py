"""``POST /v1/workflows/{name}/jobs``: one route per served workflow, whose body is the
workflow's own typed parameters (so the OpenAPI document shows each exactly)."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import inspect
from typing import Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel

from comfyfn.gateway.dependencies import ApiKey, RuntimeDep
from comfyfn.gateway.jobs import create_job, job_json
from comfyfn.gateway.registry import Registry, Served

__all__ = ["workflow_router"]


def workflow_router(registry: Registry) -> APIRouter:
    router = APIRouter(tags=["workflows"])
    for served in registry:
        _add_route(router, served)
    return router


def _add_route(router: APIRouter, served: Served) -> None:
    async def endpoint(
        body: BaseModel,  # the workflow's model: see the signature set below
        request: Request,
        runtime: RuntimeDep,
        key: ApiKey,
        idempotency_key: str | None = Header(None, max_length=200),
        webhook: str | None = Header(None, alias="X-Webhook-Url", pattern=r"^https?://\S+$"),
    ) -> dict[str, Any]:
        params = body.model_dump(exclude_unset=True, exclude_none=True)
        job = await create_job(
            runtime, key, served.name, params, webhook, idempotency_key, where=""
        )
        return job_json(runtime, job, str(request.base_url).rstrip("/"))

    signature = inspect.signature(endpoint)
    parameters = list(signature.parameters.values())
    parameters[0] = parameters[0].replace(annotation=served.model)
    endpoint.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    router.post(
        f"/v1/workflows/{served.name}/jobs",
        status_code=202,
        summary=f"Run {served.name}",
        name=f"run_{served.name}",
    )(endpoint)

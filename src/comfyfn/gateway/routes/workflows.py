"""``POST /v1/workflows/{name}/jobs``: one route per served workflow, whose body is the
workflow's own typed parameters (so the OpenAPI document shows each exactly).

A workflow with input images (``image``, ``mask``) takes its body as JSON — each image an
upload id, an http(s) URL or base64 — or as a multipart form, each image a file part (or one
of those texts). The images are checked and stored as uploads of the caller's key before the
job is queued: a missing or bad image is a 422 naming its field, and nothing is queued.
"""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import inspect
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ValidationError

from comfyfn.gateway.dependencies import ApiKey, RuntimeDep
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.registry import Registry, Served
from comfyfn.gateway.responses import JobObject
from comfyfn.gateway.routes.jobs import base_url
from comfyfn.gateway.routes.uploads import (
    image_params,
    read_request,
    request_body,
    validation_error,
)
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.service import create_job, job_view
from comfyfn.jobs.store import KeyRecord

__all__ = ["workflow_router"]

#: stands for an image given as a file while the other fields are validated
_FILE = "(file)"


@dataclass(frozen=True)
class _JobHeaders:
    idempotency_key: str | None
    webhook: str | None


async def _job_headers(
    idempotency_key: str | None = Header(None, max_length=200),
    webhook: str | None = Header(None, alias="X-Webhook-Url", pattern=r"^https?://\S+$"),
) -> _JobHeaders:
    """The headers every workflow route takes. The routes declare this dependency before the
    API key, so the OpenAPI document lists these headers first, as for ``POST /v1/jobs``."""
    return _JobHeaders(idempotency_key, webhook)


_JobHeadersDep = Annotated[_JobHeaders, Depends(_job_headers)]


async def _queue(
    request: Request,
    runtime: Runtime,
    key: KeyRecord,
    served: Served,
    params: dict[str, Any],
    headers: _JobHeaders,
) -> JobObject:
    job = await create_job(
        runtime, key, served.name, params, headers.webhook, headers.idempotency_key, where=""
    )
    return job_view(runtime, job, base_url(request))


def workflow_router(registry: Registry) -> APIRouter:
    router = APIRouter(tags=["workflows"])
    for served in registry:
        if served.images:
            _add_image_route(router, served)
        else:
            _add_route(router, served)
    return router


def _route(router: APIRouter, served: Served, **extra: Any) -> Any:
    return router.post(
        f"/v1/workflows/{served.name}/jobs",
        status_code=202,
        summary=f"Run {served.name}",
        name=f"run_{served.name}",
        **extra,
    )


def _add_route(router: APIRouter, served: Served) -> None:
    async def endpoint(
        body: BaseModel,  # the workflow's model: see the signature set below
        request: Request,
        runtime: RuntimeDep,
        headers: _JobHeadersDep,
        key: ApiKey,
    ) -> JobObject:
        params = body.model_dump(exclude_unset=True, exclude_none=True)
        return await _queue(request, runtime, key, served, params, headers)

    signature = inspect.signature(endpoint)
    parameters = list(signature.parameters.values())
    parameters[0] = parameters[0].replace(annotation=served.model)
    endpoint.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    _route(router, served)(endpoint)


def _form_schema(served: Served) -> dict[str, Any]:
    """The request model's schema with each image a file part."""
    schema = served.request_model.model_json_schema()
    for name in served.images:
        schema["properties"][name] = {
            **schema["properties"][name],
            "type": "string",
            "format": "binary",
        }
    return schema


def _add_image_route(router: APIRouter, served: Served) -> None:
    async def endpoint(
        request: Request,
        runtime: RuntimeDep,
        headers: _JobHeadersDep,
        key: ApiKey,
    ) -> JobObject:
        fields, files = await read_request(request)
        for name, parts in files.items():
            if name not in served.images or len(parts) != 1:
                raise ApiError(422, f"{name}: not an image parameter, or given twice", param=name)
        try:
            given = served.request_model.model_validate({**fields, **dict.fromkeys(files, _FILE)})
        except ValidationError as exc:
            raise validation_error(exc, "") from None
        values = given.model_dump(exclude_unset=True, exclude_none=True)
        images = {name: files[name][0] if name in files else values[name] for name in served.images}
        params = await image_params(runtime, key, served, values, images)
        return await _queue(request, runtime, key, served, params, headers)

    json_schema = served.request_model.model_json_schema()
    _route(router, served, openapi_extra=request_body(json_schema, _form_schema(served)))(endpoint)

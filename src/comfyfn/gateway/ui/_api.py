"""The web app's API (``/ui/api/…``), for a signed-in page (:data:`~._session.UiKey`).

Jobs, their events, cancelling and uploads go through the same functions as the ``/v1``
routes (same checks, limits and answers); what the ``/v1`` API has no route for is here:
the key's job history (:mod:`._history`), the served workflows' typed schemas (the ones the
OpenAPI document shows) and recipes run as gateway jobs (:mod:`._recipes`)."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import re
from typing import Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from comfyfn.gateway.dependencies import RuntimeDep
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.responses import (
    JobObject,
    JobPage,
    RecipeList,
    RecipeRunResponse,
    UploadInfo,
    WorkflowInfo,
    WorkflowList,
)
from comfyfn.gateway.routes import jobs as job_routes
from comfyfn.gateway.routes import uploads as upload_routes
from comfyfn.gateway.service import create_job, job_view, served_or_404
from comfyfn.gateway.ui._history import PAGE, key_jobs
from comfyfn.gateway.ui._recipes import RecipeRun, recipe_list, run_recipe
from comfyfn.gateway.ui._session import UiKey
from comfyfn.jobs.schema import STATES

__all__ = ["router"]

router = APIRouter(prefix="/ui/api")

_UPLOAD_ID = re.compile(r"^upl_[0-9a-f]{64}$")


class UiJob(BaseModel):
    workflow: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)


def _upload_id(value: Any, name: str) -> str:
    """An input image given by the page: an upload id, bare or as ``{"upload": id}``."""
    given = value.get("upload") if isinstance(value, dict) else value
    if not isinstance(given, str) or not _UPLOAD_ID.fullmatch(given):
        raise ApiError(422, f"{name}: choose an image first", param=name)
    return given


@router.post("/jobs", status_code=202)
async def post_job(body: UiJob, request: Request, runtime: RuntimeDep, key: UiKey) -> JobObject:
    served = served_or_404(runtime, body.workflow)
    params = dict(body.params)
    if served.images:
        images: dict[str, str | bytes] = {
            name: _upload_id(params.pop(name, None), name) for name in served.images
        }
        params = await upload_routes.image_params(runtime, key, served, params, images)
    job = await create_job(runtime, key, served.name, params, None, None)
    return job_view(runtime, job, job_routes.base_url(request))


@router.get("/jobs")
async def list_jobs(
    request: Request,
    runtime: RuntimeDep,
    key: UiKey,
    before: float | None = None,
    state: str | None = Query(None, pattern="^(" + "|".join(STATES) + ")$"),
    limit: int = Query(PAGE, ge=1, le=PAGE),
) -> JobPage:
    found = await key_jobs(runtime, key, before=before, state=state, limit=limit)
    base = job_routes.base_url(request)
    data = [job_view(runtime, job, base) for job in found]
    more = len(found) == limit
    return JobPage(data=data, next=found[-1].created_at if more else None)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request, runtime: RuntimeDep, key: UiKey) -> JobObject:
    return await job_routes.get_job(job_id, request, runtime, key)


@router.delete("/jobs/{job_id}")
async def delete_job(job_id: str, request: Request, runtime: RuntimeDep, key: UiKey) -> JobObject:
    return await job_routes.delete_job(job_id, request, runtime, key)


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse)
async def job_events(
    job_id: str,
    request: Request,
    runtime: RuntimeDep,
    key: UiKey,
    last_event_id: str | None = Header(None, max_length=100),
) -> Response:
    return await job_routes.job_events(job_id, request, runtime, key, last_event_id)


@router.post("/uploads", status_code=201)
async def create_upload(request: Request, runtime: RuntimeDep, key: UiKey) -> UploadInfo:
    return await upload_routes.create_upload(request, runtime, key)


@router.get("/workflows")
async def workflows(runtime: RuntimeDep, key: UiKey) -> WorkflowList:
    """Each served workflow's typed parameters: the JSON Schema of its ``/v1/workflows``
    route's body, and which parameters are input images."""
    data = [
        WorkflowInfo(
            name=served.name,
            images=list(served.images),
            json_schema=served.request_model.model_json_schema(),
        )
        for served in runtime.registry
    ]
    return WorkflowList(data=data)


@router.get("/recipes")
async def recipes(runtime: RuntimeDep, key: UiKey) -> RecipeList:
    return RecipeList.model_validate(
        {"data": recipe_list(), "max_pixels": runtime.settings.max_pixels}
    )


@router.post("/recipes/{name}/jobs", status_code=202)
async def recipe_jobs(
    name: str, body: RecipeRun, request: Request, runtime: RuntimeDep, key: UiKey
) -> RecipeRunResponse:
    run = await run_recipe(runtime, key, name, body, job_routes.base_url(request))
    return RecipeRunResponse.model_validate(run)

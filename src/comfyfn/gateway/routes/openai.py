"""OpenAI-compatible routes: ``GET /v1/models`` and ``POST /v1/images/generations``, which
waits for its job and answers with the images: as signed URLs once they are stored, or as
base64 as soon as the worker has them (storing them goes on; should it fail, the job ends
failed with ``StorageError`` although this caller has its images)."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import base64
from typing import Any

from fastapi import APIRouter, Request

from comfyfn.gateway.dependencies import ApiKey, RuntimeDep
from comfyfn.gateway.errors import ApiError, public_error
from comfyfn.gateway.jobs import (
    TEXT_RULE,
    create_job,
    file_url,
    output_bytes,
    output_records,
    served_or_404,
    wait_final,
)
from comfyfn.gateway.models import ImagesRequest, text_problem
from comfyfn.gateway.runtime import Runtime

router = APIRouter(tags=["openai"])

#: a job parameter's name in OpenAI's terms, for /v1/images/generations errors
_OPENAI_PARAM = {"width": "size", "height": "size", "batch_size": "n"}


@router.get("/v1/models")
async def models(runtime: RuntimeDep, _: ApiKey) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": s.name, "object": "model", "created": 0, "owned_by": "comfyfn"}
            for s in runtime.registry
        ],
    }


@router.post("/v1/images/generations")
async def images(
    body: ImagesRequest, request: Request, runtime: RuntimeDep, key: ApiKey
) -> dict[str, Any]:
    params = _job_params(runtime, body)
    try:
        job = await create_job(runtime, key, body.model, params, None, None, where="")
    except ApiError as exc:
        if exc.status == 422:  # OpenAI's clients expect 400, and its parameter names
            param = _OPENAI_PARAM.get(exc.param or "", exc.param)
            raise ApiError(400, exc.message, param=param, code=exc.code) from None
        raise
    b64 = body.response_format == "b64_json"
    update = await wait_final(runtime, job, request.is_disconnected, images_suffice=b64)
    job = update.job
    if job.state != "succeeded" and not update.contents:  # (contents: the images are in hand)
        error = public_error(job.error) or {}
        raise ApiError(
            500,
            f"generation {job.state}: {error.get('message')}",
            type="server_error",
            code=error.get("type"),
        )
    if b64:
        data = [
            {"b64_json": base64.b64encode(raw).decode(), "revised_prompt": body.prompt}
            for raw in await output_bytes(runtime, update)
        ]
    else:
        base_url = str(request.base_url).rstrip("/")
        data = [
            {"url": file_url(runtime, base_url, record.id), "revised_prompt": body.prompt}
            for record in await output_records(runtime, update)
        ]
    return {"created": int(job.created_at), "data": data}


def _job_params(runtime: Runtime, body: ImagesRequest) -> dict[str, Any]:
    """The job's parameters from OpenAI's request (400s naming OpenAI's parameter)."""
    bad = text_problem(body.model_dump(), "")
    if bad is not None:  # 422, like the lone surrogates pydantic refuses in some fields
        raise ApiError(422, f"{bad}: {TEXT_RULE}", param=bad, code="invalid_text")
    served = served_or_404(runtime, body.model)
    settings = runtime.settings
    params: dict[str, Any] = {"prompt": body.prompt}
    if len(body.prompt) > settings.max_prompt_chars:
        raise ApiError(400, f"prompt over {settings.max_prompt_chars} characters", param="prompt")
    if body.n > settings.max_images:
        raise ApiError(400, f"n must be at most {settings.max_images}", param="n")
    if body.size:
        try:
            width, height = (int(v) for v in body.size.lower().split("x"))
        except ValueError:
            raise ApiError(400, f"size {body.size!r} is not WIDTHxHEIGHT", param="size") from None
        params.update(width=width, height=height)
    if body.n > 1:
        params["batch_size"] = body.n
    for name, value in (
        ("seed", body.seed),
        ("negative", body.negative_prompt),
        ("steps", body.steps),
    ):
        if value is not None:
            params[name] = value
    names = {p.name for p in served.workflow.params}
    return {k: v for k, v in params.items() if k in names}

"""OpenAI-compatible routes: ``GET /v1/models``, ``POST /v1/images/generations`` and
``POST /v1/images/edits``, which wait for their jobs and answer with the images: as signed
URLs once they are stored, or as base64 as soon as the worker has them (storing them goes
on; should it fail, the job ends failed with ``StorageError`` although this caller has its
images).

``/v1/images/edits`` runs a served workflow with an input image (``zimage-edit`` by
default): a multipart form as OpenAI's (``image`` — one or more files, of which the first is
used —, ``mask``, ``prompt``, ``n``, ``size``, ``response_format``) plus ``seed``,
``denoise``, ``steps`` and ``negative_prompt``. ``size`` sets the output size; without it
the output has the input's size rounded to multiples of 16. ``n`` images are ``n`` jobs with
consecutive seeds. Every error is a 400 in OpenAI's shape (413 for an image over the limit,
422 naming the field for an image the ComfyUI server could not read).
"""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import asyncio
import base64
import secrets
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from comfyfn.gateway.dependencies import ApiKey, RuntimeDep
from comfyfn.gateway.errors import ApiError, public_error
from comfyfn.gateway.registry import Served
from comfyfn.gateway.requests import EditsRequest, ImagesRequest, text_problem
from comfyfn.gateway.responses import Base64Image, ImagesResponse, ModelList, ServedModel, UrlImage
from comfyfn.gateway.routes.uploads import image_params, read_request
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.service import (
    TEXT_RULE,
    create_job,
    file_url,
    output_bytes,
    output_records,
    served_or_404,
    wait_final,
)
from comfyfn.jobs.schema import JobRecord, KeyRecord

router = APIRouter(tags=["openai"])

#: a job parameter's name in OpenAI's terms, for /v1/images/generations errors
_OPENAI_PARAM = {"width": "size", "height": "size", "batch_size": "n"}


@router.get("/v1/models")
async def models(runtime: RuntimeDep, _: ApiKey) -> ModelList:
    return ModelList(data=[ServedModel(id=served.name) for served in runtime.registry])


@router.post("/v1/images/generations")
async def images(
    body: ImagesRequest, request: Request, runtime: RuntimeDep, key: ApiKey
) -> ImagesResponse:
    params = _job_params(runtime, body)
    job = await _create(runtime, key, body.model, params)
    return await _answer(runtime, request, [job], body.response_format, body.prompt)


_EDITS_FORM: dict[str, Any] = {
    **EditsRequest.model_json_schema(),
    "required": ["image", "prompt"],
}
_EDITS_FORM["properties"] = {
    "image": {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": "the input image (PNG, JPEG or WebP); of several, the first is used",
    },
    "mask": {
        "type": "string",
        "format": "binary",
        "description": "a mask, for a workflow with a LoadImageMask input",
    },
    **_EDITS_FORM["properties"],
}


@router.post(
    "/v1/images/edits",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": _EDITS_FORM}},
        }
    },
)
async def edits(request: Request, runtime: RuntimeDep, key: ApiKey) -> ImagesResponse:
    fields, files = await read_request(request)
    images: dict[str, str | bytes] = {}
    for name in ("image", "mask"):  # a file part, or a text: an upload id, a URL, base64
        text = fields.pop(name, None)
        if files.get(name):
            images[name] = files[name][0]  # of several images, the first
        elif isinstance(text, str):
            images[name] = text
    try:
        body = EditsRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise ApiError(400, f"{param}: {first['msg']}", param=param) from None
    served = served_or_404(runtime, body.model)
    _check_edit_images(served, images)
    params = await image_params(
        runtime, key, served, _job_params(runtime, body), images, status=400
    )
    base = body.seed if body.seed is not None else secrets.randbelow(2**53 - body.n)
    seeded = "seed" in served.model.model_fields  # n images: n jobs, consecutive seeds
    jobs = [
        await _create(runtime, key, body.model, {**params, "seed": base + i} if seeded else params)
        for i in range(body.n)
    ]
    loaders = {p.node_id: p.name for p in served.workflow.params if p.name in served.images}
    return await _answer(runtime, request, jobs, body.response_format, body.prompt, loaders)


def _check_edit_images(served: Served, images: Mapping[str, object]) -> None:
    if "image" not in served.images:
        raise ApiError(400, f"model {served.name!r} takes no input image", param="model")
    if "image" not in images:
        raise ApiError(400, "image: an input image is required", param="image")
    if "mask" in images and "mask" not in served.images:
        raise ApiError(
            400,
            f"mask: model {served.name!r} takes no mask (it has no LoadImageMask)",
            param="mask",
        )


async def _create(
    runtime: Runtime, key: KeyRecord, model: str, params: dict[str, Any]
) -> JobRecord:
    """:func:`create_job`, its refusals as OpenAI's clients expect them: 400, with OpenAI's
    parameter names."""
    try:
        return await create_job(runtime, key, model, params, None, None, where="")
    except ApiError as exc:
        if exc.status == 422:
            param = _OPENAI_PARAM.get(exc.param or "", exc.param)
            raise ApiError(400, exc.message, param=param, code=exc.code) from None
        raise


async def _answer(
    runtime: Runtime,
    request: Request,
    jobs: list[JobRecord],
    response_format: str,
    prompt: str,
    loaders: Mapping[str, str] | None = None,
) -> ImagesResponse:
    """Wait for the jobs; their images, as base64 or signed URLs. ``loaders``: the image
    parameter each input image node loads (a failure there is the image's fault)."""
    b64 = response_format == "b64_json"
    updates = await asyncio.gather(
        *(wait_final(runtime, job, request.is_disconnected, images_suffice=b64) for job in jobs)
    )
    data: list[UrlImage | Base64Image] = []
    base_url = str(request.base_url).rstrip("/")
    for update in updates:
        job = update.job
        if job.state != "succeeded" and not update.contents:  # (contents: images in hand)
            error = public_error(job.error) or {}
            param = (loaders or {}).get(str(error.get("node_id")))
            if param is not None:
                raise ApiError(
                    422,
                    f"{param}: the ComfyUI server could not read this image "
                    f"({error.get('exception_type') or error['type']})",
                    param=param,
                    code="unreadable_image",
                )
            raise ApiError(
                500,
                f"generation {job.state}: {error.get('message')}",
                type="server_error",
                code=error.get("type"),
            )
        if b64:
            data += [
                Base64Image(b64_json=base64.b64encode(raw).decode(), revised_prompt=prompt)
                for raw in await output_bytes(runtime, update)
            ]
        else:
            data += [
                UrlImage(url=file_url(runtime, base_url, record.id), revised_prompt=prompt)
                for record in await output_records(runtime, update)
            ]
    return ImagesResponse(created=int(jobs[0].created_at), data=data)


def _job_params(runtime: Runtime, body: ImagesRequest | EditsRequest) -> dict[str, Any]:
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
    if body.size and body.size != "auto":
        try:
            width, height = (int(v) for v in body.size.lower().split("x"))
        except ValueError:
            raise ApiError(400, f"size {body.size!r} is not WIDTHxHEIGHT", param="size") from None
        params.update(width=width, height=height)
    if body.n > 1 and isinstance(body, ImagesRequest):
        params["batch_size"] = body.n
    for name, value in (
        ("seed", body.seed),
        ("negative", body.negative_prompt),
        ("steps", body.steps),
        ("denoise", getattr(body, "denoise", None)),
    ):
        if value is not None:
            params[name] = value
    names = {p.name for p in served.workflow.params}
    return {k: v for k, v in params.items() if k in names}

"""``POST /v1/uploads``: an input image (a multipart file, base64 or an http(s) URL), checked
and stored content-addressed for the caller's key (:mod:`comfyfn.gateway.uploads`); its id
(``upl_<sha256>``) is an input image of any later job of that key. Also what the routes
that take input images share: reading a JSON or multipart body, and turning the images a
request gives into upload references in a job's parameters."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from comfyfn.errors import ComfyError
from comfyfn.gateway.dependencies import ApiKey, RuntimeDep
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.registry import Served
from comfyfn.gateway.requests import UploadRequest
from comfyfn.gateway.responses import UploadInfo
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.settings import pixel_problem
from comfyfn.gateway.uploads import (
    Upload,
    UploadMissing,
    UploadRefused,
    decode_base64,
    fetch_image,
    store_image,
    take_image,
    upload_limits,
    upload_ref,
)
from comfyfn.jobs.schema import KeyRecord
from comfyfn.storage import StorageError

__all__ = [
    "image_error",
    "image_params",
    "read_request",
    "request_body",
    "router",
    "validation_error",
]

router = APIRouter(tags=["uploads"])

#: the multipart field of ``POST /v1/uploads``
FILE_FIELD = "file"


def request_body(json_schema: dict[str, Any], form_schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI request body taking JSON or a multipart form."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": json_schema},
                "multipart/form-data": {"schema": form_schema},
            },
        }
    }


_UPLOAD_BODY = request_body(
    UploadRequest.model_json_schema(),
    {
        "type": "object",
        "required": [FILE_FIELD],
        "properties": {
            FILE_FIELD: {
                "type": "string",
                "format": "binary",
                "description": "a PNG, JPEG or WebP image",
            }
        },
    },
)


@router.post("/v1/uploads", status_code=201, openapi_extra=_UPLOAD_BODY)
async def create_upload(request: Request, runtime: RuntimeDep, key: ApiKey) -> UploadInfo:
    """Store an input image for this key; the same bytes always give the same id."""
    fields, files = await read_request(request)
    limits = upload_limits(runtime.settings)
    try:
        if files:
            if set(files) != {FILE_FIELD} or len(files[FILE_FIELD]) != 1 or fields:
                raise ApiError(
                    422, f"send one image as the form field {FILE_FIELD!r}", param=FILE_FIELD
                )
            data = files[FILE_FIELD][0]
            param = FILE_FIELD
        else:
            try:
                body = UploadRequest.model_validate(fields)
            except ValidationError as exc:
                raise validation_error(exc, "") from None
            param = "url" if body.url is not None else "b64_json"
            if body.url is not None:
                data = await fetch_image(body.url, param, limits)
            else:
                data = decode_base64(body.b64_json or "", param)
        upload = await store_image(runtime.storage, key.id, data, param, limits)
    except (UploadRefused, UploadMissing, StorageError) as exc:
        raise image_error(exc, 422) from None
    return UploadInfo.model_validate(upload.json())


async def read_request(request: Request) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
    """A JSON object or a multipart form: its fields, and its files' bytes by field name
    (``image[]`` counts as ``image``)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields: dict[str, Any] = {}
        files: dict[str, list[bytes]] = {}
        async with request.form() as form:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files.setdefault(name.removesuffix("[]"), []).append(await value.read())
                else:
                    fields[name] = value
        return fields, files
    try:
        body = await request.json()
    except RecursionError:  # as FastAPI answers a body it cannot parse (POST /v1/jobs)
        raise ApiError(400, "the JSON body is nested too deeply") from None
    except ValueError:
        raise ApiError(422, "the body is neither JSON nor a multipart form") from None
    if not isinstance(body, dict):
        raise ApiError(422, "the body must be a JSON object")
    return body, {}


def image_error(exc: ComfyError, status: int) -> ApiError:
    """The API's answer to a refused, missing or unstorable input image."""
    if isinstance(exc, UploadRefused):
        return ApiError(
            413 if exc.code == "too_large" else status, str(exc), param=exc.param, code=exc.code
        )
    if isinstance(exc, UploadMissing):
        return ApiError(status, str(exc), param=exc.param, code="upload_not_found")
    return ApiError(
        503,
        "the file storage is unavailable; try again shortly",
        type="server_error",
        code="storage_unavailable",
    )


def validation_error(exc: ValidationError, prefix: str) -> ApiError:
    first = exc.errors()[0]
    param = prefix + ".".join(str(p) for p in first["loc"])
    return ApiError(422, f"{param or 'body'}: {first['msg']}", param=param or None)


async def image_params(
    runtime: Runtime,
    key: KeyRecord,
    served: Served,
    params: Mapping[str, Any],
    images: Mapping[str, str | bytes],
    *,
    status: int = 422,
) -> dict[str, Any]:
    """A job's ``params`` with each of ``images`` (a file's bytes, an upload id, a URL or
    base64) stored as an upload of ``key`` and given as its reference, and the output size
    the images imply where none is given (so cost limits count it)."""
    limits = upload_limits(runtime.settings)
    uploads: dict[str, Upload] = {}
    for name, value in images.items():
        try:
            uploads[name] = await take_image(runtime.storage, key.id, value, name, limits)
        except (UploadRefused, UploadMissing, StorageError) as exc:
            raise image_error(exc, status) from None
    for name, upload in uploads.items():  # ComfyUI holds an input whole, whatever the output
        problem = pixel_problem(name, (upload.width, upload.height), runtime.settings.max_pixels)
        if problem is not None:
            raise ApiError(status, problem, param=name, code="limit_exceeded")
    given = {**params, **{name: upload_ref(u.id) for name, u in uploads.items()}}
    try:
        return served.sized_by(given, {name: u.input_image() for name, u in uploads.items()})
    except ComfyError as exc:
        name = next(iter(uploads))
        raise ApiError(status, f"{name}: {exc}", param=name) from None

"""``GET /v1/files/{file_id}``: a stored output, with a signed URL (``exp``, ``sig``) or an
API key of the job's owner; ETag and ``If-None-Match`` (304)."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import asyncio

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse, Response

from comfyfn.gateway.dependencies import (
    LimiterDep,
    SettingsDep,
    StoreDep,
    authenticate,
    rate_limit,
)
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.security import verify_url
from comfyfn.gateway.worker import storage_path

router = APIRouter(tags=["files"])


@router.get(
    "/v1/files/{file_id}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 304: {"description": "Unchanged"}},
)
async def get_file(
    file_id: str,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    exp: str | None = None,
    sig: str | None = None,
    authorization: str | None = Header(None),
) -> Response:
    record = await asyncio.to_thread(store.get_file, file_id)
    signed = exp is not None and sig is not None and verify_url(store.secret(), file_id, exp, sig)
    if not signed:
        key = rate_limit(limiter, await authenticate(store, authorization))
        owner = None
        if record is not None:  # the same answer for a missing file and someone else's
            owner = await asyncio.to_thread(store.get_job, record.job_id, key.id)
        if owner is None:
            raise ApiError(404, f"no file {file_id!r}", code="file_not_found")
    if record is None:
        raise ApiError(404, f"no file {file_id!r}", code="file_not_found")
    path = storage_path(settings, record.path)
    if path is None or not path.exists():
        raise ApiError(404, f"no file {file_id!r}", code="file_not_found")
    etag = f'"{record.etag}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(
        path,
        media_type=record.content_type,
        headers={"ETag": etag, "Cache-Control": "private, max-age=3600"},
    )

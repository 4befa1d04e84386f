"""``GET /v1/files/{file_id}``: a stored output, with a signed URL (``exp``, ``sig``) or an
API key of the job's owner; ETag and ``If-None-Match`` (304).

A file in a local folder is served from it; a store that presigns URLs (S3) is answered
with a redirect (307) to a presigned URL, valid for ``url_ttl`` seconds and never past the
signed URL's own expiry (so a URL minted before its key was revoked gives nothing that
outlives it); any other store's bytes are streamed. Any replica serves any file: the record
is in the database, the file in the shared store."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import asyncio
import logging
import time

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from comfyfn.gateway._outputs import stored_key
from comfyfn.gateway.dependencies import RuntimeDep, authenticate, rate_limit
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.security import verify_url
from comfyfn.jobs.schema import FileRecord
from comfyfn.storage import LocalStorage, StorageError, StorageNotFound

router = APIRouter(tags=["files"])
log = logging.getLogger("comfyfn.gateway")

_CACHE = "private, max-age=3600"
#: what an output can be: a still image first, else an animated image, video, audio or text
_MEDIA_TYPES = (
    "image/png",
    "image/*",
    "video/*",
    "audio/*",
    "text/plain",
    "application/octet-stream",
)


@router.get(
    "/v1/files/{file_id}",
    response_class=Response,
    responses={
        200: {
            "description": "The file's bytes, served as its media type",
            "content": {
                kind: {"schema": {"type": "string", "format": "binary"}} for kind in _MEDIA_TYPES
            },
        },
        304: {"description": "Unchanged"},
        307: {"description": "Redirect to a presigned URL of the object store"},
    },
)
async def get_file(
    file_id: str,
    request: Request,
    runtime: RuntimeDep,
    exp: str | None = None,
    sig: str | None = None,
    authorization: str | None = Header(None),
) -> Response:
    store = runtime.store
    record = await asyncio.to_thread(store.get_file, file_id)
    signed = exp is not None and sig is not None and verify_url(store.secret(), file_id, exp, sig)
    ttl = float(runtime.settings.url_ttl)
    if signed:
        assert exp is not None
        ttl = min(ttl, int(exp) - time.time())
    else:
        key = rate_limit(runtime.limiter, await authenticate(request, store, authorization))
        owner = None
        if record is not None:  # the same answer for a missing file and someone else's
            owner = await asyncio.to_thread(store.get_job, record.job_id, key.id)
        if owner is None:
            raise _not_found(file_id)
    if record is None:
        raise _not_found(file_id)
    etag = f'"{record.etag}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    try:
        return await _serve(runtime, record, etag, max(1.0, ttl))
    except StorageNotFound:
        raise _not_found(file_id) from None
    except StorageError as exc:  # the reason may name the store's internals: logged only
        log.error("cannot serve file %s: %s", file_id, exc)
        raise ApiError(
            503, "the file store is unavailable; try again shortly", type="server_error"
        ) from None


async def _serve(runtime: Runtime, record: FileRecord, etag: str, ttl: float) -> Response:
    storage = runtime.storage
    key = stored_key(storage, record.path)
    if key is None:
        raise StorageNotFound(f"file {record.id} is outside the storage", key=record.path)
    url = await storage.url(key, ttl)
    if url is not None:
        return RedirectResponse(url, 307, headers={"ETag": etag, "Cache-Control": "no-store"})
    headers = {"ETag": etag, "Cache-Control": _CACHE}
    if isinstance(storage, LocalStorage):
        path = storage.path(key)
        if not path.is_file():
            raise StorageNotFound(f"no stored file {key!r}", key=key)
        return FileResponse(path, media_type=record.content_type, headers=headers)
    data = await storage.get(key)
    return Response(data, media_type=record.content_type, headers=headers)


def _not_found(file_id: str) -> ApiError:
    return ApiError(404, f"no file {file_id!r}", code="file_not_found")

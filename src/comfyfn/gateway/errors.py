"""The gateway's errors: OpenAI's shape, the documented error responses, the body limit, and
what a job's stored error may show an API caller (:func:`public_error`)."""

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from comfyfn.jobs.database import unavailable

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "BodyLimit",
    "BodyTooLarge",
    "ErrorBody",
    "error_response",
    "install_handlers",
    "public_error",
    "public_message",
    "safe_text",
]


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )
        self.headers = headers or {}


def error_response(
    status: int,
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "message": safe_text(message),
            "type": type,
            "param": None if param is None else safe_text(param),
            "code": code,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


log = logging.getLogger("comfyfn.gateway")


def install_handlers(app: FastAPI) -> None:
    """Every error the gateway answers leaves in OpenAI's shape: ours, validation, HTTP,
    database outages (503 with Retry-After) and anything unexpected (500, no traceback)."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0]
        param = ".".join(str(p) for p in first["loc"] if p != "body")
        messages = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in errors
        )
        return error_response(422, messages, "invalid_request_error", param or None)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(sa_exc.SQLAlchemyError)
    async def database_error(request: Request, exc: sa_exc.SQLAlchemyError) -> JSONResponse:
        if not unavailable(exc):  # "not now" (down, restarting, locked, pool exhausted): 503
            return await unexpected(request, exc)
        log.warning(
            "%s %s: the database is unavailable: %s",
            request.method,
            request.url.path,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return error_response(
            503,
            "the job database is unavailable; try again shortly",
            "server_error",
            code="database_unavailable",
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error", "server_error", code="internal_error")


def safe_text(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) escaped as ``\\udxxx``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Bad request"),
        (401, "Missing or invalid API key"),
        (404, "Not found"),
        (413, "Body too large"),
        (422, "Invalid parameters"),
        (429, "Rate limit exceeded"),
        (500, "Generation failed"),
        (503, "No ComfyUI server, or the database is unavailable"),
        (504, "Not ready in time"),
    )
}


class BodyTooLarge(HTTPException):
    """A streamed (chunked) body went over the limit while it was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class BodyLimit:
    """Refuse request bodies over the limit with 413: a declared ``Content-Length`` at once, a
    streamed (chunked) body as soon as the bytes read pass it. The routes that take images
    (``/v1/uploads``, ``/v1/images/edits``, ``/v1/workflows/*/jobs``, ``/mcp``, the web
    app's uploads) get ``image_limit``
    instead (an upload's own limit plus base64 and form overhead)."""

    def __init__(self, app: Any, limit: int, image_limit: int | None = None) -> None:
        self.app, self.default_limit = app, limit
        self.image_limit = max(limit, image_limit or 0)

    def _limit(self, path: str) -> int:
        takes_images = path in ("/v1/uploads", "/v1/images/edits", "/mcp", "/ui/api/uploads") or (
            path.startswith("/v1/workflows/") and path.endswith("/jobs")
        )
        return self.image_limit if takes_images else self.default_limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        too_large = error_response(413, f"request body over {limit} bytes", "invalid_request_error")
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await too_large(scope, receive, send)
        seen = 0
        started = False

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI re-raises HTTPExceptions from body reading: the app's handler
                    # answers it; anything else that reads the body ends up below
                    raise BodyTooLarge(limit)
            return message

        async def sending(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, sending)
        except BodyTooLarge:
            if started:
                raise
            await too_large(scope, receive, send)


# -- what a stored job error may show -----------------------------------------------------------

_TRACEBACK = re.compile(r"Traceback \(most recent call last\).*", re.S)
_FRAME = re.compile(r"^\s*File \".*$", re.M)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>(),]*[^\s'\"<>(),.:;!?]")
_HOSTPORT = re.compile(
    r"\b(?:localhost|[a-zA-Z][\w-]*(?:\.[\w-]+)+):\d{2,5}\b"  # host.name:port
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b(?::\d{1,5}\b)?"  # any IPv4, with or without port
    r"|\[[0-9a-fA-F:.]+\](?::\d{1,5}\b)?"  # [IPv6]
)
_SERVER_HAS = re.compile(r"\s*\(the server has:[^)]*\)")
_LIST = re.compile(r"((?:not in|one of|choices|list:?)\s*(?:the server's choices\s*)?)\[[^\]]*\]")
_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"<>(),:;]+){2,}/?|\b[A-Za-z]:\\[^\s'\"<>(),;]+")
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_MAX_MESSAGE = 1000


def public_message(text: str) -> str:
    """A stored error message as an API caller may read it: no traceback, no server URL or
    host:port, no file system path, no list of the server's files (choices)."""
    text = _TRACEBACK.sub("", text)
    text = _FRAME.sub("", text)
    text = _SERVER_HAS.sub("", text)
    text = _LIST.sub(r"\1[…]", text)
    text = _URL.sub("<server>", text)
    text = _HOSTPORT.sub("<server>", text)
    text = _PATH.sub("<path>", text)
    text = re.sub(r"\s*\n\s*\n+", "\n", text).strip()
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    return safe_text(text)


def public_error(error: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A job's stored error as the API shows it: ``{"type", "message"}`` and, for a failed node,
    ``node_id``, ``class_type`` and ``exception_type``; everything else (tracebacks, servers,
    prompt ids) is dropped and the message cleaned by :func:`public_message`."""
    if error is None:
        return None
    kind = error.get("type")
    shown: dict[str, Any] = {
        "type": kind if isinstance(kind, str) and _TYPE.fullmatch(kind) else "error",
        "message": public_message(str(error.get("message") or "")) or "no details",
    }
    for name in ("node_id", "class_type", "exception_type"):
        value = error.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool):
            shown[name] = public_message(str(value))[:200]
    return shown

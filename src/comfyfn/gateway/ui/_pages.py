"""The page (``GET /``) and its static files (``GET /ui/static/{name}``), read from this
package, each with the web app's security headers (:data:`SECURITY_HEADERS`)."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import functools
import hashlib
import re
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from comfyfn.gateway.errors import ApiError

__all__ = ["CSP", "SECURITY_HEADERS", "router", "static_names"]

router = APIRouter()

#: scripts, styles and connections from this origin only; images also as data:/blob: URLs
#: (sampler previews, pasted images); no inline script or style, no frames, no plugins
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # file URLs carry their signature in the query
    "Cross-Origin-Opener-Policy": "same-origin",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_NAME = re.compile(r"^[a-z0-9_-]+\.(?:js|css|svg)$")


def static_names() -> list[str]:
    """The files under ``static/`` (what the wheel must ship)."""
    root = resources.files(__package__).joinpath("static")
    return sorted(p.name for p in root.iterdir() if p.is_file())


@functools.cache
def _read(name: str) -> bytes | None:
    entry = resources.files(__package__).joinpath("static", name)
    return entry.read_bytes() if entry.is_file() else None


def _file(request: Request, name: str) -> Response:
    data = _read(name)
    if data is None:
        raise ApiError(404, f"no file {name!r}", code="not_found")
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    suffix = name[name.rfind(".") :]
    return Response(data, media_type=_TYPES[suffix], headers=headers)


@router.get("/")
async def page(request: Request) -> Response:
    return _file(request, "index.html")


@router.get("/ui/static/{name}")
async def static(name: str, request: Request) -> Response:
    if not _NAME.fullmatch(name):
        raise ApiError(404, f"no file {name!r}", code="not_found")
    return _file(request, name)

"""Signing in and out of the web app, and the API key of a signed-in page.

``POST /ui/session`` with ``{"key": "..."}`` checks the key and keeps it in an HttpOnly,
SameSite=Strict cookie scoped to ``/ui`` (Secure over https): page scripts never hold it, so
a script injected into the page could not carry it away, and the browser sends it to this
origin's ``/ui`` routes only. Every unsafe request (and signing in) must carry the header
:data:`UI_HEADER`, which a cross-site form or simple request cannot send, so another site
cannot act with the cookie. Sign-in attempts are limited per client address
(:data:`SIGN_IN_RATE`) against guessing."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, Request, Response
from pydantic import BaseModel, Field

from comfyfn.gateway.dependencies import RuntimeDep, authenticate, rate_limit
from comfyfn.gateway.errors import ApiError
from comfyfn.jobs.schema import KeyRecord

__all__ = ["COOKIE", "SIGN_IN_RATE", "UI_HEADER", "UiKey", "router"]

router = APIRouter()

COOKIE = "comfyfn_key"
UI_HEADER = "X-Comfyfn-UI"
SIGN_IN_RATE = "10/min"  #: sign-in attempts per client address
_SAFE = {"GET", "HEAD"}


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=200)


def _same_app(request: Request) -> None:
    if request.method not in _SAFE and request.headers.get(UI_HEADER) != "1":
        raise ApiError(403, f"send the {UI_HEADER} header", code="ui_header_missing")


async def _signed_in(
    request: Request,
    runtime: RuntimeDep,
    key: Annotated[str | None, Cookie(alias=COOKIE)] = None,
) -> KeyRecord:
    _same_app(request)
    record = await authenticate(request, runtime.store, f"Bearer {key}" if key else None)
    return rate_limit(runtime.limiter, record)


#: the signed-in page's API key (401 without one, 429 over its rate)
UiKey = Annotated[KeyRecord, Depends(_signed_in)]


@router.post("/ui/session")
async def sign_in(
    body: SignIn, request: Request, response: Response, runtime: RuntimeDep
) -> dict[str, str]:
    _same_app(request)
    client = request.client.host if request.client else "unknown"
    wait = runtime.limiter.check(f"ui-sign-in:{client}", SIGN_IN_RATE)
    if wait:
        raise ApiError(
            429,
            "too many sign-in attempts; wait a minute",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )
    record = await authenticate(request, runtime.store, f"Bearer {body.key}")
    response.set_cookie(
        COOKIE,
        body.key.strip(),
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return {"name": record.name}


@router.delete("/ui/session")
async def sign_out(request: Request, response: Response) -> dict[str, bool]:
    _same_app(request)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return {"signed_in": False}


@router.get("/ui/api/me")
async def me(key: UiKey) -> dict[str, str]:
    return {"name": key.name}

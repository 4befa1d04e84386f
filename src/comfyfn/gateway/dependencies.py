"""The routes' dependencies (FastAPI ``Depends``): the runtime and its parts, the API key
(``Authorization: Bearer``; 401 without a live one) and its rate limit (429)."""
# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import asyncio
from typing import Annotated

from fastapi import Depends, Header, Request

from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.metrics import KEY_ID
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.security import RateLimiter
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.jobs.store import KeyRecord, Store

__all__ = [
    "ApiKey",
    "LimiterDep",
    "RuntimeDep",
    "SettingsDep",
    "StoreDep",
    "authenticate",
    "get_runtime",
    "rate_limit",
]


def get_runtime(request: Request) -> Runtime:
    runtime = request.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_store(runtime: RuntimeDep) -> Store:
    return runtime.store


def get_settings(runtime: RuntimeDep) -> GatewaySettings:
    return runtime.settings


def get_limiter(runtime: RuntimeDep) -> RateLimiter:
    return runtime.limiter


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]


async def authenticate(request: Request, store: Store, authorization: str | None) -> KeyRecord:
    """The live key of an ``Authorization: Bearer`` header; 401 otherwise. Its id is left
    in ``request.state`` for the access log (:mod:`comfyfn.gateway.metrics`)."""
    secret = (authorization or "").removeprefix("Bearer ").strip()
    key = await asyncio.to_thread(store.find_key, secret) if secret else None
    if key is None:
        raise ApiError(
            401, "missing or invalid API key", type="authentication_error", code="invalid_api_key"
        )
    setattr(request.state, KEY_ID, key.id)
    return key


def rate_limit(limiter: RateLimiter, key: KeyRecord) -> KeyRecord:
    """``key`` if it is within its rate (the request is counted); 429 with Retry-After if not."""
    wait = limiter.check(key.id, key.rate)
    if wait:
        raise ApiError(
            429,
            f"rate limit {key.rate} exceeded for this key",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )
    return key


async def authenticated(
    request: Request, store: StoreDep, authorization: str | None = Header(None)
) -> KeyRecord:
    return await authenticate(request, store, authorization)


def rate_limited(
    limiter: LimiterDep, key: Annotated[KeyRecord, Depends(authenticated)]
) -> KeyRecord:
    return rate_limit(limiter, key)


#: the request's API key, authenticated (401) and within its rate (429)
ApiKey = Annotated[KeyRecord, Depends(rate_limited)]

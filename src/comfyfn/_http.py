"""HTTP calls to one ComfyUI server: error mapping and retries of idempotent requests."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import stamina

from comfyfn.errors import HTTPStatusError, ServerUnreachable, TransportError

__all__ = ["DEFAULT_TIMEOUT", "HttpSession"]

log = logging.getLogger("comfyfn")

#: Per-request HTTP timeouts; the whole-job deadline is separate (``job_timeout``).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_RETRY_STATUS = frozenset({502, 503, 504})


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, HTTPStatusError):
        return exc.status_code in _RETRY_STATUS
    return isinstance(exc, TransportError) and not isinstance(exc, ServerUnreachable)


class HttpSession:
    """Wraps :class:`httpx.AsyncClient` for one server; every failure is a ComfyError."""

    def __init__(self, server: str, timeout: httpx.Timeout, *, retries: int = 3) -> None:
        self.server = server
        self.retries = retries
        self.client = httpx.AsyncClient(base_url=server, timeout=timeout)

    async def aclose(self) -> None:
        await self.client.aclose()

    def error_for_exception(self, method: str, path: str, exc: httpx.HTTPError) -> TransportError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ServerUnreachable(
                f"cannot reach ComfyUI at {self.server}: {exc or type(exc).__name__} "
                "(is it running? start the local one with `comfyfn engine up`)",
                server=self.server,
            )
        return TransportError(
            f"{method} {path} to {self.server} failed: {type(exc).__name__}: {exc}",
            server=self.server,
        )

    def error_for_status(self, method: str, path: str, response: httpx.Response) -> HTTPStatusError:
        body = response.text[:2000]
        return HTTPStatusError(
            f"{method} {path} answered HTTP {response.status_code}: {body[:300]}",
            server=self.server,
            status_code=response.status_code,
            body=body,
            method=method,
            path=path,
        )

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, no retry; raises ServerUnreachable / TransportError / HTTPStatusError."""
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self.error_for_exception(method, path, exc) from exc
        if response.status_code >= 400:
            raise self.error_for_status(method, path, response)
        return response

    async def idempotent(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request safe to repeat: retried with jittered backoff on transient failures."""
        async for attempt in stamina.retry_context(
            on=_retryable, attempts=self.retries + 1, wait_initial=0.05, wait_max=1.0, timeout=30
        ):
            with attempt:
                if attempt.num > 1:
                    log.debug("retrying %s %s (attempt %d)", method, path, attempt.num)
                return await self.send(method, path, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover - stamina re-raises

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        response = await self.idempotent("GET", path, **kwargs)
        return response.json()

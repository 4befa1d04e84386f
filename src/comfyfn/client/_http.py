"""HTTP calls to one ComfyUI server: error mapping, JSON decoding and retries.

Every failure becomes a :class:`~comfyfn.ComfyError`: unreachable servers, error statuses,
and answers that are not what ComfyUI sends (:class:`~comfyfn.errors.ProtocolError`, naming
the route). Idempotent requests are retried with short exponential backoff and a small
bounded jitter (tenacity, per call: no global state, no log output of its own); each retry
is logged at DEBUG on the ``comfyfn`` logger.

Credentials for a protected server are added to each request by the transport, as it
leaves: httpx logs the request it was given (``HTTP Request: GET …`` at INFO), so the
``?token=`` never reaches a log; text from elsewhere that goes into an error is redacted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from comfyfn.client._aiohttp import AiohttpTransport
from comfyfn.client._credentials import Credentials
from comfyfn.errors import HTTPStatusError, ProtocolError, ServerUnreachable, TransportError
from comfyfn.events import describe

__all__ = ["DEFAULT_TIMEOUT", "HttpSession", "retried", "retrying", "tls_context", "transient"]

log = logging.getLogger("comfyfn")
T = TypeVar("T")

#: Per-request HTTP timeouts; the whole-job deadline is separate (``job_timeout``).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_RETRY_STATUS = frozenset({502, 503, 504})
_WANTED: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
_RETRY_BUDGET = 30.0  #: seconds; no retry starts after this much time in one call
_URLS_KEPT = 64  #: parsed URLs kept per session (a job's own routes come and go)
_CREDENTIALS_HINT = (
    " (a protected server: give its credentials in the URL, https://user:password@host or "
    "https://host/?token=…, or as auth=Credentials(...))"
)


def transient(exc: BaseException) -> bool:
    """Worth retrying: a lost connection, a 502/503/504, or a garbled answer."""
    if isinstance(exc, HTTPStatusError):
        return exc.status_code in _RETRY_STATUS
    return isinstance(exc, TransportError) and not isinstance(exc, ServerUnreachable)


def retrying(
    retries: int,
    what: str,
    on: Callable[[BaseException], bool] = transient,
    *,
    done: int = 0,
    spent: float = 0.0,
) -> AsyncRetrying:
    """A retry policy for one call: ``retries`` more attempts after the first.

    Waits 0.05, 0.1, 0.2… s (at most 1 s) plus up to 0.05 s of jitter; the last error is
    re-raised as it is. ``what`` (e.g. ``"GET /queue"``) names the call in the DEBUG log.
    ``done`` attempts that took ``spent`` seconds were made already (see :func:`retried`).
    """

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        _log_retry(what, wait, state.attempt_number + done, retries + 1, exc)

    return AsyncRetrying(
        stop=stop_after_attempt(retries + 1 - done) | stop_after_delay(_RETRY_BUDGET - spent),
        wait=wait_exponential(multiplier=0.05 * 2**done, max=1.0) + wait_random(0, 0.05),
        retry=retry_if_exception(on),
        before_sleep=log_retry,
        reraise=True,
    )


async def retried(
    retries: int,
    what: str,
    call: Callable[[], Awaitable[T]],
    on: Callable[[BaseException], bool] = transient,
) -> T:
    """``call()`` under the :func:`retrying` policy. The first attempt runs on its own:
    tenacity's machinery costs more CPU than a request to a server on loopback."""
    start = time.monotonic()
    try:
        return await call()
    except Exception as exc:
        spent = time.monotonic() - start
        if retries < 1 or spent >= _RETRY_BUDGET or not on(exc):
            raise
        wait = 0.05 + random.uniform(0, 0.05)  # what retrying() waits after a first failure
        _log_retry(what, wait, 1, retries + 1, exc)
    await asyncio.sleep(wait)
    async for attempt in retrying(retries, what, on, done=1, spent=time.monotonic() - start):
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover - tenacity re-raises


def _log_retry(what: str, wait: float, attempt: int, attempts: int, exc: object) -> None:
    log.debug(
        "retrying %s in %.2fs (attempt %d of %d failed: %s)", what, wait, attempt, attempts, exc
    )


class _Authorizing(httpx.AsyncBaseTransport):
    """Adds the credentials to each request on its way to ``inner`` (a copy: the request
    httpx logs and keeps stays without them)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, credentials: Credentials) -> None:
        self._inner = inner
        self._headers = credentials.http_headers()
        self._query = dict(credentials.query)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = httpx.Headers(request.headers)
        headers.update(self._headers)
        sent = httpx.Request(
            request.method,
            request.url.copy_merge_params(self._query),
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(sent)

    async def aclose(self) -> None:
        await self._inner.aclose()


def tls_context(server: str) -> ssl.SSLContext:
    """The process's TLS context for ``server``: one verified context (the system's CAs,
    made at the first https client: loading them costs some 25 ms) for https, one bare
    context for plain http (httpx wants one; without CAs it could verify nothing, and it is
    never used for a handshake). Both are made once, lazily, and never changed."""
    return _verified_tls() if server.lower().startswith("https:") else _bare_tls()


@functools.cache
def _verified_tls() -> ssl.SSLContext:
    return ssl.create_default_context()


@functools.cache
def _bare_tls() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def environment_proxy(url: str) -> str | None:
    """The proxy ``HTTP(S)_PROXY``/``ALL_PROXY`` name for ``url``, unless ``NO_PROXY`` exempts
    it: what httpx would use had it made the transport itself."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return proxy
    return None


class HttpSession:
    """Wraps :class:`httpx.AsyncClient` for one server; every failure is a ComfyError.

    ``server`` is the public base URL (no credentials); ``credentials`` go on every request.
    ``transport`` replaces httpx's network transport (tests pass an
    :class:`httpx.MockTransport`; anything else an :class:`httpx.AsyncBaseTransport`).
    """

    def __init__(
        self,
        server: str,
        timeout: httpx.Timeout,
        *,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.server = server
        self.retries = retries
        self.credentials = credentials or Credentials()
        #: whether the server has ``POST /api/jobs/{id}/cancel``: None until a cancel finds out
        self.has_job_routes: bool | None = None
        verify = tls_context(server)  # the process's: a new one per client costs 25 ms
        proxy = environment_proxy(server)
        if transport is None and proxy is None:
            transport = AiohttpTransport(verify)  # a fraction of httpcore's CPU per request
        if self.credentials:
            inner = transport or httpx.AsyncHTTPTransport(proxy=proxy, verify=verify)
            transport = _Authorizing(inner, self.credentials)
        self.client = httpx.AsyncClient(
            base_url=server, timeout=timeout, transport=transport, verify=verify
        )
        self._urls: dict[str, httpx.URL] = {}

    def url(self, path: str) -> httpx.URL:
        """The absolute URL of ``path`` (as httpx joins it to the base URL), parsed once
        for the routes asked often: httpx would parse a relative one twice per request."""
        if (known := self._urls.get(path)) is not None:
            return known
        url = httpx.URL(f"{str(self.client.base_url).rstrip('/')}/{path.lstrip('/')}")
        if len(self._urls) >= _URLS_KEPT:
            self._urls.clear()
        self._urls[path] = url
        return url

    async def aclose(self) -> None:
        await self.client.aclose()

    def error_for_exception(self, method: str, path: str, exc: httpx.HTTPError) -> TransportError:
        detail = self.credentials.redact(str(exc))
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ServerUnreachable(
                f"cannot reach ComfyUI at {self.server}: {detail or type(exc).__name__} "
                "(is it running? start the local one with `comfyfn engine up`)",
                server=self.server,
            )
        return TransportError(
            f"{method} {path} to {self.server} failed: {type(exc).__name__}: {detail}",
            server=self.server,
        )

    def error_for_status(self, method: str, path: str, response: httpx.Response) -> HTTPStatusError:
        body = self.credentials.redact(response.text[:2000])
        hint = _CREDENTIALS_HINT if response.status_code in (401, 403, 407) else ""
        return HTTPStatusError(
            f"{method} {path} answered HTTP {response.status_code}: {body[:300]}{hint}",
            server=self.server,
            status_code=response.status_code,
            body=body,
            method=method,
            path=path,
        )

    def protocol_error(self, method: str, path: str, what: str, body: Any = "") -> ProtocolError:
        """``what`` completes "<METHOD> <path> from <server> answered …"."""
        shown = self.credentials.redact(body if isinstance(body, str) else repr(body))
        what = self.credentials.redact(what)
        return ProtocolError(
            f"{method} {path} from {self.server} answered {what}",
            server=self.server,
            method=method,
            path=path,
            body=shown[:2000],
        )

    def decode_json(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        expect: type | tuple[type, ...] | None = None,
    ) -> Any:
        """The JSON body of ``response``; ProtocolError if it is not JSON (or not ``expect``)."""
        try:
            data = response.json()
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError…
            text = response.content[:200].decode("utf-8", "replace")
            raise self.protocol_error(
                method, path, f"something that is not JSON: {exc}; it began {text!r}", text
            ) from exc
        return self.check_type(method, path, data, expect)

    def check_type(
        self, method: str, path: str, data: Any, expect: type | tuple[type, ...] | None
    ) -> Any:
        """``data`` if it is an ``expect`` (any JSON if None); ProtocolError otherwise."""
        if expect is not None and not isinstance(data, expect):
            wanted = " or ".join(_WANTED.get(t, t.__name__) for t in _as_tuple(expect))
            raise self.protocol_error(
                method, path, f"{describe(data)} where {wanted} was expected", data
            )
        return data

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, no retry; raises ServerUnreachable / TransportError / HTTPStatusError."""
        try:
            response = await self.client.request(method, self.url(path), **kwargs)
        except httpx.HTTPError as exc:
            raise self.error_for_exception(method, path, exc) from exc
        if response.status_code >= 400:
            raise self.error_for_status(method, path, response)
        return response

    async def idempotent(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request safe to repeat: retried with backoff on transient failures."""
        return await retried(
            self.retries, f"{method} {path}", lambda: self.send(method, path, **kwargs)
        )

    async def get_json(
        self, path: str, *, expect: type | tuple[type, ...] | None = None, **kwargs: Any
    ) -> Any:
        """GET ``path`` and decode its JSON, which must be an ``expect`` (e.g. ``dict``).

        An answer that is not JSON is retried like a lost one, then raises ProtocolError;
        JSON of the wrong type raises ProtocolError at once (asking again would not help).
        """

        async def get() -> Any:
            return self.decode_json("GET", path, await self.send("GET", path, **kwargs))

        return self.check_type("GET", path, await retried(self.retries, f"GET {path}", get), expect)

    async def get_dict(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """GET ``path``: a JSON object (ProtocolError for anything else)."""
        data: dict[str, Any] = await self.get_json(path, expect=dict, **kwargs)
        return data

    async def get_list(self, path: str, **kwargs: Any) -> list[Any]:
        """GET ``path``: a JSON list (ProtocolError for anything else)."""
        data: list[Any] = await self.get_json(path, expect=list, **kwargs)
        return data

    async def download(self, path: str, **kwargs: Any) -> tuple[bytes, str | None]:
        """Stream a GET body (no retry); also says if fewer/more bytes came than announced."""
        try:
            async with self.client.stream("GET", self.url(path), **kwargs) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self.error_for_status("GET", path, response)
                data = b"".join([chunk async for chunk in response.aiter_bytes()])
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                # Content-Length counts the bytes as sent: compressed ones, if compressed.
                received = len(data) if encoding == "identity" else response.num_bytes_downloaded
                announced = response.headers.get("content-length")
        except httpx.HTTPError as exc:
            raise self.error_for_exception("GET", path, exc) from exc
        if announced is not None and announced.isdigit() and int(announced) != received:
            return data, f"{received} bytes arrived but Content-Length said {announced}"
        return data, None


def _as_tuple(expect: type | tuple[type, ...]) -> tuple[type, ...]:
    return expect if isinstance(expect, tuple) else (expect,)

"""httpx over aiohttp's client: the HTTP/1.1 connections of every request to a server.

httpx's own transport (httpcore on anyio) costs 0.6–1.1 ms of CPU per request on loopback,
several times the exchange itself; a runner driving many servers makes four requests a job,
so that was a good part of its CPU. aiohttp (the library ComfyUI's own server is built on,
with a C parser) does the same work for about a third of it. httpx stays on top, so
retries, logging and error messages are unchanged.

We adapt it ourselves rather than take ``httpx-aiohttp``: that package maps a server that
disconnects after the request was sent to :class:`httpx.ConnectTimeout`, and comfyfn's
safety after a lost answer to ``POST /prompt`` rests on one rule — :class:`httpx.ConnectError`
and :class:`httpx.ConnectTimeout` only when nothing was sent (connecting failed); anything
after that is a lost answer (:class:`httpx.RemoteProtocolError`, ``ReadError``,
``ReadTimeout``), looked up before anything is posted again.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

__all__ = ["KEEPALIVE", "AiohttpTransport"]

KEEPALIVE = 5.0  #: seconds an idle connection is kept (httpx's default too)
_CHUNK = 1 << 16


@contextlib.contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    """aiohttp's errors as httpx's, by whether the request can have reached the server."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # sock_connect: nothing was sent
        raise httpx.ConnectTimeout("timed out connecting", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS: nothing was sent
        raise httpx.ConnectError(_unconnected(exc), request=request) from exc
    except aiohttp.SocketTimeoutError as exc:  # sock_read: sent, no answer in time
        raise httpx.ReadTimeout("timed out waiting for the answer", request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except (aiohttp.ClientError, OSError) as exc:  # reset, cut body: sent, answer lost
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
    except TimeoutError as exc:
        raise httpx.ReadTimeout("timed out waiting for the answer", request=request) from exc


def _unconnected(exc: aiohttp.ClientConnectorError) -> str:
    """Why connecting failed, in a few words (aiohttp's own text names the host, the port
    and its TLS setting, which the caller's message already says or does not need)."""
    cause = exc.os_error
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"the name does not resolve ({cause.strerror or cause})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return f"TLS failed ({cause})"
    return cause.strerror or str(cause) or type(exc).__name__


class _Body(httpx.AsyncByteStream):
    """The answer's body as aiohttp reads it (not decompressed: httpx does that)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self.response, self.request = response, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx(self.request):
            async for chunk in self.response.content.iter_chunked(_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        self.response.release()


def _reason(response: aiohttp.ClientResponse) -> bytes:
    return (response.reason or "").encode("latin-1", "replace")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Requests to any server over one aiohttp session (made in the running event loop on
    first use); ``tls`` is the context for ``https``."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        self.tls = tls
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.tls, keepalive_timeout=KEEPALIVE, limit=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.get("connect"), sock_read=timeouts.get("read")
        )
        body = await request.aread()
        with _as_httpx(request):
            response = await self._open().request(
                request.method,
                str(request.url),
                headers=[
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                ],
                data=body or None,
                timeout=timeout,
                allow_redirects=False,
                compress=False,
            )
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": _reason(response)},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

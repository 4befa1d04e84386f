"""Fetching a model file over HTTP safely: redirects followed by hand, and a stall check.

Redirects are followed here (``follow_redirects=False``, at most the client's
``max_redirects`` hops), so the manifest's headers (tokens) go to the origin (scheme, host,
port) of the entry's URL only, never to a CDN it redirects to (httpx would forward all but
``Authorization``). A redirect loop, or one to an invalid or non-http(s) URL, is a
:class:`DownloadFailed` naming the URL.

A transfer averaging under a minimum rate over a window (as curl's ``--speed-limit`` and
``--speed-time``) has stalled: :class:`RateFloor` stops it with :class:`Retry`, which the
caller treats as an interrupted transfer to resume.

A ComfyUI server's own assets API (``/api/assets``, ComfyUI >= 0.33 started with
``--enable-assets``) and model folders are reached through :class:`AssetsApi`: whether the
server has the API is asked of it (``/features``, then ``GET /api/assets``), and a server
without it is a :class:`~comfyfn.workflow.RouteMissing` naming ``POST /api/assets``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from comfyfn.client import Credentials, public_url
from comfyfn.errors import ComfyError
from comfyfn.models._errors import DownloadFailed
from comfyfn.models._manifest import ModelFile
from comfyfn.workflow import RouteMissing

__all__ = ["UPLOAD_ROUTE", "AssetsApi", "PushFailed", "RateFloor", "Retry", "get"]

#: the route a push needs
UPLOAD_ROUTE = "POST /api/assets"
_ABSENT = (404, 405)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Retry(Exception):
    """The transfer stopped early but can be resumed."""


class RateFloor:
    """Stops a transfer that averages under ``min_rate`` bytes/s over ``seconds`` (checked as
    bytes arrive; a server that sends nothing at all hits the read timeout instead)."""

    def __init__(self, min_rate: float, seconds: float) -> None:
        self.min_rate, self.seconds = min_rate, seconds
        self.since, self.got = time.monotonic(), 0

    def add(self, received: int) -> None:
        self.got += received
        elapsed = time.monotonic() - self.since
        if elapsed < self.seconds:
            return
        if self.got < self.min_rate * elapsed:
            raise Retry(
                f"stalled: {self.got} bytes in {elapsed:.1f} s, under the minimum of "
                f"{self.min_rate:g} bytes/s over {self.seconds:g} s"
            )
        self.since, self.got = time.monotonic(), 0


@contextlib.contextmanager
def get(
    http: httpx.Client,
    file: ModelFile,
    target: Path,
    headers: Mapping[str, str],
    ours: Mapping[str, str],
) -> Iterator[httpx.Response]:
    """The streamed answer to a GET of ``file.url``, redirects followed: ``headers`` (the
    manifest's) go to its URL's origin only, ``ours`` to every hop; the redirects are the
    answer's ``history`` (their ``X-Linked-*`` headers are read). ``target`` is named in
    errors."""
    url = httpx.URL(file.url)
    origin, history = _origin(url), list[httpx.Response]()
    for _ in range(http.max_redirects + 1):
        sent = {**headers, **ours} if _origin(url) == origin else dict(ours)
        request = http.build_request("GET", url, headers=sent)
        answer = http.send(request, stream=True, follow_redirects=False)
        if not answer.has_redirect_location:
            answer.history = history
            try:
                yield answer
            finally:
                answer.close()
            return
        answer.close()
        history.append(answer)
        url = _redirected(file, target, answer)
    raise DownloadFailed(
        f"{file.relpath}: {file.url} redirects more than {http.max_redirects} times "
        "(a redirect loop?); check the entry's url",
        url=file.url,
        path=target,
    )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _redirected(file: ModelFile, target: Path, answer: httpx.Response) -> httpx.URL:
    """Where ``answer`` (a redirect) sends the request next."""
    try:
        url = answer.url.join(answer.headers["location"])
    except httpx.InvalidURL as exc:
        raise DownloadFailed(
            f"{file.relpath}: {file.url} redirects to an invalid URL ({exc})",
            url=file.url,
            path=target,
        ) from None
    if url.scheme not in _DEFAULT_PORTS:
        raise DownloadFailed(
            f"{file.relpath}: {file.url} redirects to a {url.scheme}: URL, not http(s)",
            url=file.url,
            path=target,
        )
    return url.copy_with(fragment=None)


class PushFailed(ComfyError):
    """A model file could not be put onto a server (an error answer, a hash or size that
    differs from the local file's, a file that does not land in its folder)."""


class AssetsApi:
    """A ComfyUI server's assets API and model folders, over one HTTP connection pool.

    ``server`` may carry credentials (``https://user:pass@host/?token=T``): user and
    password become Basic auth, its query parameters go on every request; ``credentials``
    add to them. Messages name the server by its public URL only."""

    def __init__(self, server: str, credentials: Credentials | None = None) -> None:
        url = httpx.URL(server)
        self.server = public_url(server)
        auth = (url.username, url.password) if url.username or url.password else None
        extra = credentials or Credentials()
        self.http = httpx.Client(
            base_url=url.copy_with(username=None, password=None, query=None, fragment=None),
            params={**dict(url.params), **extra.query},
            headers=extra.http_headers(),
            auth=auth,
            timeout=httpx.Timeout(30.0, connect=10.0),
            follow_redirects=False,
        )

    def __enter__(self) -> AssetsApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def require(self) -> None:
        """Nothing if the server takes uploads to its assets API; else :class:`RouteMissing`
        naming ``POST /api/assets`` and why (no such route, or the API turned off)."""
        features = self._json_or_none("/features")
        if isinstance(features, Mapping) and features.get("assets") is False:
            raise self._missing("its /features say assets: false (start it with --enable-assets)")
        answer = self._send("GET", "/api/assets", params={"limit": "1"})
        if answer.status_code in _ABSENT:
            raise self._missing(
                f"GET /api/assets answered HTTP {answer.status_code} (a ComfyUI without "
                "the assets API: copy the file into its models folder another way)"
            )
        if answer.status_code == 503:
            raise self._missing("its assets API is turned off (start it with --enable-assets)")
        self._check(answer, "GET /api/assets")

    def has_content(self, digest: str) -> bool:
        """Whether the server holds bytes with this ``blake3:<hex>`` hash already."""
        answer = self._send("HEAD", f"/api/assets/hash/{digest}")
        if answer.status_code == 404:
            return False
        self._check(answer, f"HEAD /api/assets/hash/{digest}")
        return True

    def upload(self, fields: Mapping[str, str], file: IO[bytes] | None, read_timeout: float) -> Any:
        """``POST /api/assets``: a multipart form of ``fields`` in their order, then ``file``
        (named ``fields["name"]``) if given; the asset as the server describes it."""
        parts: list[tuple[str, tuple[str | None, IO[bytes] | str, str]]] = [
            (key, (None, value, "text/plain")) for key, value in fields.items()
        ]
        if file is not None:
            parts.append(("file", (fields["name"], file, "application/octet-stream")))
        timeout = httpx.Timeout(30.0, connect=10.0, read=read_timeout)
        answer = self._send("POST", "/api/assets", files=parts, timeout=timeout)
        return self._check(answer, UPLOAD_ROUTE)

    def folder(self, folder: str | None = None) -> list[str] | None:
        """The files ``GET /models/<folder>`` lists (None: the server has no such folder);
        without ``folder``, the model folders ``GET /models`` lists."""
        route = f"/models/{folder}" if folder is not None else "/models"
        answer = self._send("GET", route)
        if answer.status_code == 404:
            return None
        listed = self._check(answer, f"GET {route}")
        if not isinstance(listed, list):
            raise PushFailed(f"ComfyUI at {self.server}: GET {route} is not a list")
        return [str(name).replace("\\", "/") for name in listed]

    def _missing(self, why: str) -> RouteMissing:
        return RouteMissing(
            f"ComfyUI at {self.server} cannot take model files: pushing needs {UPLOAD_ROUTE} "
            f"(its assets API), and {why}",
            server=self.server,
            route=UPLOAD_ROUTE,
        )

    def _json_or_none(self, path: str) -> Any:
        answer = self._send("GET", path)
        if answer.status_code != 200:
            return None
        try:
            return answer.json()
        except ValueError:
            return None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise PushFailed(
                f"ComfyUI at {self.server}: {method} {path} failed "
                f"({type(exc).__name__}: {exc or 'no answer'})"
            ) from None

    def _check(self, answer: httpx.Response, route: str) -> Any:
        """The answer's JSON; an error status is a :class:`PushFailed` with the server's
        own error code and message."""
        body: Any = None
        with contextlib.suppress(ValueError):
            body = answer.json()
        if answer.is_success:
            return body
        error = body.get("error") if isinstance(body, Mapping) else None
        said = ""
        if isinstance(error, Mapping):
            said = f": {error.get('code', '')} {error.get('message', '')}".rstrip()
        raise PushFailed(
            f"ComfyUI at {self.server}: {route} answered HTTP {answer.status_code}{said}"
        )

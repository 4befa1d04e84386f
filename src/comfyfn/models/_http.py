"""Fetching a model file over HTTP safely: redirects followed by hand, and a stall check.

Redirects are followed here (``follow_redirects=False``, at most the client's
``max_redirects`` hops), so the manifest's headers (tokens) go to the origin (scheme, host,
port) of the entry's URL only, never to a CDN it redirects to (httpx would forward all but
``Authorization``). A redirect loop, or one to an invalid or non-http(s) URL, is a
:class:`DownloadFailed` naming the URL.

A transfer averaging under a minimum rate over a window (as curl's ``--speed-limit`` and
``--speed-time``) has stalled: :class:`RateFloor` stops it with :class:`Retry`, which the
caller treats as an interrupted transfer to resume.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from comfyfn.models._errors import DownloadFailed
from comfyfn.models._manifest import ModelFile

__all__ = ["RateFloor", "Retry", "get"]

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

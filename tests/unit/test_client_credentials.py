"""Protected servers: credentials from :class:`Credentials` or the server URL go on every
HTTP request and the websocket upgrade, and never into a log, an error, a repr or a result.

HTTP runs against :class:`tests.support.fake_comfy.FakeComfy` behind :class:`Guarded`, a reverse
proxy that answers 401 to anything without the credential; the websocket against a real
``websockets`` server on 127.0.0.1 that refuses the upgrade likewise. Every test reads the
whole log (DEBUG, every logger: httpx writes each URL at INFO, websockets each request line
and header at DEBUG) for the secrets.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

import comfyfn
from comfyfn import AsyncClient, Client
from comfyfn.client import Credentials, public_url
from comfyfn.client._credentials import split_url
from comfyfn.client._http import environment_proxy
from comfyfn.client._socket import EventSocket
from tests.support.fake_comfy import GRAPH, SERVER, FakeComfy
from tests.support.sockets import NoSocket

pytestmark = pytest.mark.anyio

TOKEN = "tok-Hq8vZ3"
PASSWORD = "p@ss/wörd 1"
KEY = "key-7Yd2Lw"
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
SECRETS = (TOKEN, PASSWORD, quote(PASSWORD, safe=""), KEY, BASIC)
HOST = SERVER.removeprefix("http://")


def bearer_sent(request: httpx.Request) -> bool:
    return request.headers.get("authorization") == f"Bearer {TOKEN}"


def basic_sent(request: httpx.Request) -> bool:
    return request.headers.get("authorization") == f"Basic {BASIC}"


def key_sent(request: httpx.Request) -> bool:
    return request.headers.get("x-api-key") == KEY


def token_sent(request: httpx.Request) -> bool:
    return request.url.params.get("token") == TOKEN


#: kind → (server URL, auth=, what the proxy wants)
KINDS: dict[str, tuple[str, Credentials | None, Callable[[httpx.Request], bool]]] = {
    "bearer": (SERVER, Credentials(bearer=TOKEN), bearer_sent),
    "basic": (SERVER, Credentials(basic=("alice", PASSWORD)), basic_sent),
    "basic in the URL": (f"http://alice:{quote(PASSWORD, safe='')}@{HOST}", None, basic_sent),
    "header": (SERVER, Credentials(headers={"X-API-Key": KEY}), key_sent),
    "query": (SERVER, Credentials(query={"token": TOKEN}), token_sent),
    "token in the URL": (f"{SERVER}/?token={TOKEN}", None, token_sent),
}


class Guarded:
    """A reverse proxy in front of ``fake``: 401 for any request ``allowed`` refuses."""

    def __init__(self, fake: FakeComfy, allowed: Callable[[httpx.Request], bool]) -> None:
        self.fake, self.allowed = fake, allowed
        self.refused: list[str] = []
        self.passed = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.allowed(request):
            self.refused.append(f"{request.method} {request.url.path}")
            return httpx.Response(401, text="401 Authorization Required")
        self.passed += 1
        return self.fake(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"a secret in {str(text)[:200]!r}"


@pytest.fixture(autouse=True)
def no_websocket(monkeypatch):
    monkeypatch.setattr(AsyncClient, "_socket_class", NoSocket)


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_job_runs_behind_the_proxy_with_each_kind_and_nothing_shows(kind, caplog):
    url, auth, wanted = KINDS[kind]
    proxy = Guarded(FakeComfy(), wanted)
    caplog.set_level(logging.DEBUG)
    async with AsyncClient(url, auth=auth, transport=proxy.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        generation = await job.result()
        filename = generation.images[0].filename
        assert filename is not None and await c.view(filename) == generation.images[0].data
        shown = (c.server, repr(c), job.server, repr(job), generation.server, repr(auth))
    assert proxy.refused == [] and proxy.passed >= 5  # /prompt, /queue, /history, /view…
    assert shown[0] == shown[2] == generation.server == SERVER
    assert generation.images[0].provenance["server"] == SERVER
    assert f"HTTP Request: POST {SERVER}/prompt" in caplog.text  # httpx logs URLs: not ours
    assert_no_secret(caplog.text, *shown, generation.images[0].provenance)


async def test_without_credentials_the_proxy_refuses_and_the_error_says_what_to_do():
    proxy = Guarded(FakeComfy(), bearer_sent)
    async with AsyncClient(SERVER, transport=proxy.transport()) as c:
        with pytest.raises(comfyfn.HTTPStatusError) as info:
            await c.submit_graph(GRAPH, validate=False)
    assert info.value.status_code == 401 and info.value.server == SERVER
    assert "a protected server: give its credentials in the URL" in str(info.value)
    first, cleanup = proxy.refused  # the submission, then its cancel (it might be queued)
    assert first == "POST /prompt" and cleanup.endswith("/cancel")


async def test_an_error_page_that_echoes_a_secret_is_blanked(caplog):
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text=f"denied: {request.url} {request.headers}")

    caplog.set_level(logging.DEBUG)
    async with AsyncClient(
        f"{SERVER}/?token={TOKEN}",
        auth=Credentials(headers={"X-API-Key": KEY}),
        retries=0,
        transport=httpx.MockTransport(echo),
    ) as c:
        with pytest.raises(comfyfn.HTTPStatusError) as info:
            await c.queue()
    assert "token=***" in info.value.body and "x-api-key" in info.value.body
    assert_no_secret(info.value, info.value.body, caplog.text)


def test_credentials_in_comfyfn_server_reach_the_server_but_not_the_surface(monkeypatch):
    monkeypatch.setenv(
        "COMFYFN_SERVER", f"http://alice:{quote(PASSWORD, safe='')}@{HOST}/?token={TOKEN}"
    )
    proxy = Guarded(FakeComfy(), lambda r: basic_sent(r) and token_sent(r))
    with Client(transport=proxy.transport()) as c:
        assert c.server == SERVER and c.queue() == {"queue_running": [], "queue_pending": []}
        assert repr(c) == f"<Client {SERVER}>"
    assert proxy.refused == [] and proxy.passed == 1


def test_auth_given_to_the_client_replaces_the_urls_authorization():
    proxy = Guarded(FakeComfy(), lambda r: bearer_sent(r) and token_sent(r))
    url = f"http://alice:{quote(PASSWORD, safe='')}@{HOST}/?token={TOKEN}"
    with Client(url, auth=Credentials(bearer=TOKEN), transport=proxy.transport()) as c:
        c.queue()
    assert proxy.refused == [] and proxy.passed == 1


def test_a_bad_url_with_credentials_is_reported_without_them():
    for url in (f"ftp://alice:{TOKEN}@h", f"http://alice:{TOKEN}@h:port"):
        with pytest.raises(comfyfn.ConfigError) as info:
            Client(url).server  # noqa: B018 - the property parses the URL
        assert "alice" not in str(info.value)
        assert_no_secret(info.value)


# -- the websocket ---------------------------------------------------------------------------


async def test_the_websocket_upgrade_carries_the_credentials_and_logs_none(caplog):
    seen: list[tuple[str, str | None]] = []

    def guard(connection: ServerConnection, request: Request) -> Response | None:
        seen.append((request.path, request.headers.get("Authorization")))
        if request.headers.get("Authorization") != f"Basic {BASIC}" or TOKEN not in request.path:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "401 Authorization Required\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    caplog.set_level(logging.DEBUG)
    credentials = Credentials(basic=("alice", PASSWORD), query={"token": TOKEN})
    async with serve(handler, "127.0.0.1", 0, process_request=guard) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/ws?clientId=c1"
        good = EventSocket(url, credentials=credentials)
        assert await good.ensure()
        await good.close()
        refused = EventSocket(url, credentials=Credentials(basic=("alice", "wrong")))
        assert not await refused.ensure()
    assert seen[0] == (f"/ws?clientId=c1&token={TOKEN}", f"Basic {BASIC}")
    ours = "\n".join(  # the test's server logs what it received: that is not the client's log
        r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server")
    )
    assert "> GET /ws?clientId=c1&token=*** HTTP/1.1" in ours  # websockets' own debug line
    assert "> Authorization: Basic ***" in ours
    assert f"websocket {url} unavailable (server rejected WebSocket connection: HTTP 401)" in ours
    assert_no_secret(ours)


# -- Credentials and URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "public", "credentials"),
    [
        (
            f"https://alice:{quote(PASSWORD, safe='')}@gpu.example:8443/comfy/?token={TOKEN}",
            "https://gpu.example:8443/comfy",
            Credentials(basic=("alice", PASSWORD), query={"token": TOKEN}),
        ),
        ("http://[::1]:8188/", "http://[::1]:8188", Credentials()),
        ("http://gpu:8188/?a=1&b=", "http://gpu:8188", Credentials(query={"a": "1", "b": ""})),
    ],
)
def test_a_server_url_splits_into_its_public_part_and_credentials(url, public, credentials):
    assert split_url(url) == (public, credentials)
    assert public_url(url) == public


def test_credentials_that_cannot_be_sent_are_refused():
    wrongs: list[tuple[dict[str, Any], str]] = [
        (dict(bearer="a", basic=("u", "p")), "bearer or basic, not both"),
        (dict(bearer="a", headers={"authorization": "x"}), "an Authorization header beside"),
        (dict(headers={"X-Key": "a\r\nEvil: 1"}), "has a line break"),
        (dict(headers={"X Key": "a"}), "'X Key' is not a valid header name"),
        (dict(basic=("a:b", "p")), "user name cannot contain ':'"),
    ]
    for wrong, message in wrongs:
        with pytest.raises(comfyfn.ConfigError, match=message):
            Credentials(**wrong)


def test_credentials_show_only_what_kinds_they_hold():
    full = Credentials(basic=("alice", PASSWORD), headers={"X-API-Key": KEY}, query={"t": TOKEN})
    assert repr(full) == "Credentials(basic, headers=['X-API-Key'], query=['t'])"
    assert repr(Credentials(bearer=TOKEN)) == "Credentials(bearer)" and not Credentials()
    assert full.redact(f"{PASSWORD} {quote(PASSWORD)} {BASIC} alice:{PASSWORD} {KEY}") == (
        "*** *** *** *** ***"
    )


def test_merging_prefers_the_explicit_credentials():
    from_url = Credentials(basic=("alice", PASSWORD), query={"token": "old", "a": "1"})
    over = Credentials(bearer=TOKEN, headers={"X-API-Key": KEY}, query={"token": TOKEN})
    assert from_url.merged(over) == Credentials(
        bearer=TOKEN, headers={"X-API-Key": KEY}, query={"token": TOKEN, "a": "1"}
    )
    assert from_url.merged(Credentials(headers={"Authorization": "Token x"})).basic is None
    assert from_url.merged(Credentials(query={"b": "2"})).basic == ("alice", PASSWORD)
    assert from_url.merged(None) is from_url


def test_the_environment_proxy_is_kept_for_protected_servers(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert environment_proxy("http://gpu:8188") is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal")
    assert environment_proxy("http://gpu:8188") == "http://proxy.corp:3128"
    assert environment_proxy("http://gpu.internal:8188") is None
    assert environment_proxy("https://gpu:8188") is None  # no HTTPS_PROXY


def test_the_websocket_logger_blanks_secrets_even_in_a_bad_logging_call(caplog):
    from comfyfn.client._socket import _Redacting

    logger = _Redacting(logging.getLogger("websockets.client"), Credentials(bearer=TOKEN))
    with caplog.at_level(logging.DEBUG, logger="websockets.client"):
        logger.debug("> Authorization: Bearer %s", TOKEN)
        logger.debug("%d frames", TOKEN)  # a format that does not fit its arguments
    assert [r.getMessage() for r in caplog.records] == [
        "> Authorization: Bearer ***",
        "%d frames ('***',)",
    ]

"""The client on the ComfyUI people run today (0.28.0, from ../shared) and on the session's
engine (the managed 0.3.75, or whatever ``COMFYFN_TEST_COMFYUI`` names): cancel through the
job routes where they exist, canonical prompt ids, throttled progress, unknown node classes,
and protected servers behind a reverse proxy (:class:`AuthProxy`). What a server does is
asked of it (a route, its own code), never read from its version.

Tests marked with the ``version`` fixture run once on each: "session" and "0.28.0" (skipped,
with the reason, when ../shared is absent, or when the session engine is 0.28.0 already).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import comfyfn
from comfyfn import AsyncClient, Client
from comfyfn.client import Credentials
from comfyfn.client._job import check_prompt_id
from comfyfn.engine import Engine
from comfyfn.events import NodeStarted, Progress, Stopped
from tests.support.comfyui_trees import COMFYUI_028, session_is_028, unpack_comfyui
from tests.support.graphs import sleep_graph, trivial_graph

pytestmark = [pytest.mark.engine, pytest.mark.anyio, pytest.mark.timeout(600)]

NAME = f"{os.environ['COMFYFN_TEST_ENGINE']}-cur28"


@pytest.fixture(scope="module")
def engine28(engine, tmp_path_factory):
    """A ComfyUI 0.28.0 engine: the session's, if it is one, else our own."""
    if session_is_028():
        yield engine
        return
    own = Engine(NAME, comfyui_path=unpack_comfyui(COMFYUI_028, tmp_path_factory.mktemp("cur28")))
    own.up()
    yield own
    own.down()


@pytest.fixture(params=["session"] if session_is_028() else ["session", "0.28.0"])
def version(request, engine) -> Engine:
    """Each engine under test: the session's, and 0.28.0 unless the session's is that."""
    if request.param == "session":
        return engine
    return request.getfixturevalue("engine28")


class Recording(httpx.AsyncBaseTransport):
    """The network, noting every request as ``(method, path, status)``."""

    def __init__(self) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.network.handle_async_request(request)
        self.seen.append((request.method, request.url.path, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.network.aclose()


@contextlib.asynccontextmanager
async def deadline(seconds: float, what: str) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        pytest.fail(f"waited {seconds}s for {what}")


# -- cancel -----------------------------------------------------------------------------------


async def test_cancel_dequeues_and_interrupts_through_the_route_where_there_is_one(version, unique):
    network = Recording()
    async with AsyncClient(version.url, transport=network) as c:
        slow = sleep_graph(unique(), milliseconds=60_000, steps=600)
        running = await c.submit_graph(slow)
        waiting = await c.submit_graph(sleep_graph(unique(), milliseconds=60_000, steps=600))
        events = running.events()
        async with deadline(60, "the first job to run its sleep node"):
            async for event in events:
                if isinstance(event, NodeStarted) and event.node_id == "2":
                    break
        assert await waiting.cancel() == "dequeued"
        assert await running.cancel() == "interrupted"
        async with deadline(60, "the interrupted job to end"):
            rest = [event async for event in events]
            waited = [event async for event in waiting.events()]
        assert await running.cancel() == "absent"  # over: nothing left, and no error
    assert isinstance(rest[-1], Stopped) and not rest[-1].error.lost
    assert isinstance(waited[-1], Stopped) and waited[-1].error.lost  # gone from the server
    posts = [(path, status) for method, path, status in network.seen if method == "POST"]
    cancels = [p for p in posts if p[0] != "/prompt"]
    if has_job_routes(version.url):
        assert cancels == [
            (f"/api/jobs/{waiting.prompt_id}/cancel", 200),
            (f"/api/jobs/{running.prompt_id}/cancel", 200),
            (f"/api/jobs/{running.prompt_id}/cancel", 200),
        ]
    else:  # the first cancel finds out there is no such route; then the queue is used
        assert cancels == [
            (f"/api/jobs/{waiting.prompt_id}/cancel", 405),
            ("/queue", 200),
            ("/interrupt", 200),
        ]


def has_job_routes(url: str) -> bool:
    """Whether the server has ``POST /api/jobs/{id}/cancel``: asked with an id it cannot know
    (a no-op answered 200 where the route exists)."""
    return httpx.post(f"{url}/api/jobs/{uuid.uuid4()}/cancel", timeout=30).status_code == 200


def throttles_progress(eng: Engine) -> bool:
    """Whether the server's own code throttles ``progress`` messages (``comfy/utils.py``)."""
    source = (eng.install.comfyui / "comfy" / "utils.py").read_text(encoding="utf-8")
    return "PROGRESS_THROTTLE_MIN_INTERVAL" in source


# -- prompt ids -------------------------------------------------------------------------------

IDS = [
    str(uuid.uuid4()),
    str(uuid.uuid4()).upper(),
    uuid.uuid4().hex,
    "{" + str(uuid.uuid4()) + "}",
    "urn:uuid:" + str(uuid.uuid4()),
    "MY-JOB-1",
]


def test_the_prompt_id_check_is_the_rule_of_0_28(engine28, unique):
    no_outputs = {"1": trivial_graph(unique())["1"]}  # rejected after the id check: nothing runs
    for prompt_id in IDS:
        answer = httpx.post(
            f"{engine28.url}/prompt", json={"prompt": no_outputs, "prompt_id": prompt_id}
        )
        server_refuses = answer.json()["error"]["type"] == "invalid_prompt_id"
        try:
            check_prompt_id(prompt_id)
            we_refuse = False
        except comfyfn.ConfigError:
            we_refuse = True
        assert we_refuse is server_refuses, prompt_id
    given = str(uuid.uuid4())
    with Client(engine28.url) as c:
        assert c.submit_graph(trivial_graph(unique()), prompt_id=given).result().prompt_id == given
        made = c.run(trivial_graph(unique()))  # the ids comfyfn makes pass too
    assert str(uuid.UUID(made.prompt_id)) == made.prompt_id


# -- progress and unknown node classes --------------------------------------------------------


async def test_progress_events_are_right_however_the_server_throttles(version, unique, caplog):
    caplog.set_level(logging.DEBUG)
    steps = 100  # 20 ms each: 0.28 sends one progress message per 100 ms at most
    async with AsyncClient(version.url) as c:
        graph = sleep_graph(unique(), milliseconds=2000, steps=steps)
        events = [e async for e in c.stream_graph(graph)]
    seen = [(e.value, e.max) for e in events if isinstance(e, Progress) and e.node_id == "2"]
    assert seen[0] == (1, steps) and seen[-1] == (steps, steps)
    assert all(a[0] < b[0] for a, b in itertools.pairwise(seen))
    assert {m for _, m in seen} == {steps}
    print(f"\nComfyUI {version.install.version}: {len(seen)} progress events for {steps} steps")
    if throttles_progress(version):
        assert len(seen) < steps / 2  # throttled: what this test is about
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("comfyfn")]
    assert not any("progress_state" in message for message in ours)  # ignored quietly


def test_an_unknown_node_class_is_named_with_its_node(version, unique):
    graph = trivial_graph(unique())
    graph["1"]["class_type"] = "NoSuchNode"
    graph["1"]["_meta"] = {"title": "My Loader"}  # 0.28's own message names only the title
    with Client(version.url) as c, pytest.raises(comfyfn.WorkflowInvalid) as info:
        c.run(graph, validate=False)
    (problem,) = info.value.problems
    assert (problem.node_id, problem.class_type) == ("1", "NoSuchNode")
    assert "node 1 NoSuchNode: node class NoSuchNode does not exist on the server" in str(
        info.value
    )


# -- protected servers ------------------------------------------------------------------------

TOKEN = "tok-" + uuid.uuid4().hex[:12]
KEY = "key-" + uuid.uuid4().hex[:12]
PASSWORD = "pä ss/" + uuid.uuid4().hex[:8]
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
SECRETS = (TOKEN, KEY, PASSWORD, quote(PASSWORD, safe=""), BASIC)
Check = Callable[[str, dict[str, str]], bool]


def bearer(target: str, headers: dict[str, str]) -> bool:
    return headers.get("authorization") == f"Bearer {TOKEN}"


def basic(target: str, headers: dict[str, str]) -> bool:
    return headers.get("authorization") == f"Basic {BASIC}"


def api_key(target: str, headers: dict[str, str]) -> bool:
    return headers.get("x-api-key") == KEY


def token(target: str, headers: dict[str, str]) -> bool:
    return parse_qs(urlsplit(target).query).get("token") == [TOKEN]


class AuthProxy:
    """A reverse proxy on 127.0.0.1 in front of ComfyUI, as nginx with auth would be.

    A request or websocket upgrade that ``allowed`` refuses gets ``401``; the others are
    piped to ComfyUI byte for byte. Each connection carries one request (``Connection:
    close`` is added), so every request is checked; an upgraded websocket stays piped.
    ``passed`` and ``refused`` note ``"GET /path"`` (``"WS /ws"`` for upgrades).
    """

    def __init__(self, upstream: str, allowed: Check) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.allowed = allowed
        self.passed: list[str] = []
        self.refused: list[str] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> AuthProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *fields = head.decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields if f)}
        upgrade = headers.get("upgrade", "").lower() == "websocket"
        what = f"{'WS' if upgrade else method} {urlsplit(target).path}"
        if not self.allowed(target, headers):
            self.refused.append(what)
            body = b"401 Authorization Required\n"
            writer.write(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        self.passed.append(what)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        if not upgrade:
            kept = [f for f in fields if f and not f.lower().startswith("connection:")]
            head = "\r\n".join([line, *kept, "Connection: close", "", ""]).encode("latin-1")
        up_writer.write(head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()


#: kind → (what the proxy wants, the client for a proxy at ``url``)
KINDS: dict[str, tuple[Check, Callable[[str], Client]]] = {
    "bearer": (bearer, lambda url: Client(url, auth=Credentials(bearer=TOKEN))),
    "basic in the URL": (
        basic,
        lambda url: Client(url.replace("//", f"//alice:{quote(PASSWORD, safe='')}@")),
    ),
    "basic": (basic, lambda url: Client(url, auth=Credentials(basic=("alice", PASSWORD)))),
    "header": (api_key, lambda url: Client(url, auth=Credentials(headers={"X-API-Key": KEY}))),
    "token in the URL": (token, lambda url: Client(f"{url}/?token={TOKEN}")),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_job_runs_through_a_protected_proxy_and_no_secret_shows(
    server, unique, caplog, kind
):
    allowed, make_client = KINDS[kind]
    caplog.set_level(logging.DEBUG)
    async with AuthProxy(server, allowed) as proxy:
        async with AsyncClient(proxy.url) as stranger:
            with pytest.raises(comfyfn.HTTPStatusError) as refused:
                await stranger.queue()
        with pytest.raises(InvalidStatus, match="HTTP 401"):
            async with connect(f"ws://127.0.0.1:{proxy.port}/ws?clientId=x"):
                pytest.fail("the proxy let a websocket in without credentials")
        assert proxy.refused == ["GET /queue", "WS /ws"]
        client = make_client(proxy.url)
        generation, events, shown = await asyncio.to_thread(_run_one, client, unique())
    assert refused.value.status_code == 401
    assert "WS /ws" in proxy.passed and proxy.refused == ["GET /queue", "WS /ws"]
    assert any(isinstance(e, Progress) for e in events)  # they came over the websocket
    assert generation.server == proxy.url and generation.images[0].width == 64
    assert f'HTTP Request: POST {proxy.url}/prompt "HTTP/1.1 200 OK"' in caplog.text
    for text in (caplog.text, *shown, generation.images[0].provenance):
        for secret in SECRETS:
            assert secret not in str(text), f"{kind}: a secret in {str(text)[:300]!r}"


def _run_one(
    client: Client, color: int
) -> tuple[comfyfn.Generation, list[comfyfn.Event], list[str]]:
    """A job with progress (sent only over the websocket), followed by the sync client."""
    with client as c:
        job = c.submit_graph(sleep_graph(color, milliseconds=300, steps=3))
        events = list(job.events())
        shown = [c.server, repr(c), job.server, repr(job)]
    assert isinstance(events[-1], comfyfn.Succeeded), events[-1]
    return events[-1].generation, events, shown


async def test_credentials_in_comfyfn_server_carry_through_the_module_helpers(
    server, unique, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    async with AuthProxy(server, lambda t, h: basic(t, h) and token(t, h)) as proxy:
        userinfo = f"alice:{quote(PASSWORD, safe='')}"
        url = f"http://{userinfo}@127.0.0.1:{proxy.port}/?token={TOKEN}"
        monkeypatch.setenv("COMFYFN_SERVER", url)
        generation = await asyncio.to_thread(
            comfyfn.generate, "a boat", seed=unique(), size=(64, 64), steps=1
        )
    assert proxy.refused == [] and "WS /ws" in proxy.passed
    assert generation.server == proxy.url and generation.images
    for secret in SECRETS:
        assert secret not in caplog.text and secret not in str(generation.images[0].provenance)

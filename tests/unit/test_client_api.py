"""The public client API: the sync twins match the async originals signature by signature,
constructors do no I/O, and both clients open and close by the same rule."""

from __future__ import annotations

import asyncio
import inspect
import threading

import httpx
import pytest

import comfyfn
from comfyfn import AsyncClient, AsyncJob, Client, ComfyError, Job
from comfyfn.client import _config
from tests.support.fake_comfy import GRAPH, SERVER, FakeComfy
from tests.support.sockets import NoSocket

#: how an async return type reads in the sync twin
SYNC_TYPES = [
    ("AsyncGenerator[Event, None]", "Generator[Event, None, None]"),
    ("Awaitable[Generation]", "Generation"),
    ("AsyncClient", "Client"),
    ("AsyncJob", "Job"),
]
#: async-only and sync-only names of the same method
RENAMED = {"aclose": "close"}
EMPTY_QUEUE: dict[str, list] = {"queue_running": [], "queue_pending": []}


def _public(cls: type) -> dict[str, object]:
    return {name: value for name, value in vars(cls).items() if not name.startswith("_")}


def _sync_type(annotation: str) -> str:
    for async_type, sync_type in SYNC_TYPES:
        annotation = annotation.replace(async_type, sync_type)
    return annotation


def _summary(fn: object) -> str:
    return (inspect.getdoc(fn) or "").split("\n\n")[0]


def _described(fn) -> tuple:
    """Names, kinds, defaults and annotations of the parameters (``self``/``cls`` dropped)."""
    function = fn.__func__ if isinstance(fn, classmethod) else fn
    signature = inspect.signature(function)
    params = list(signature.parameters.values())[1:]
    return (
        [(p.name, p.kind, p.default, _sync_type(str(p.annotation))) for p in params],
        _sync_type(str(signature.return_annotation)),
    )


@pytest.mark.parametrize(("async_cls", "sync_cls"), [(AsyncClient, Client), (AsyncJob, Job)])
def test_every_public_method_has_a_sync_twin_with_the_same_signature(async_cls, sync_cls):
    async_members, sync_members = _public(async_cls), _public(sync_cls)
    expected = {RENAMED.get(name, name) for name in async_members}
    assert set(sync_members) == expected, "a method without its twin"
    for name, async_member in async_members.items():
        sync_member = sync_members[RENAMED.get(name, name)]
        if isinstance(async_member, property):
            assert isinstance(sync_member, property), name
            continue
        assert _described(sync_member) == _described(async_member), name
        assert _summary(sync_member) == _summary(async_member), name
        assert isinstance(sync_member, classmethod) == isinstance(async_member, classmethod)
        if not isinstance(async_member, classmethod) and name != "function":
            is_async = inspect.iscoroutinefunction(async_member) or inspect.isasyncgenfunction(
                async_member
            )
            assert is_async and not inspect.iscoroutinefunction(sync_member), name


def test_the_sync_client_is_written_out_not_patched_in():
    assert "stream" in vars(Client) and "queue" in vars(Client)
    assert inspect.signature(Client.__init__) == inspect.signature(AsyncClient.__init__)
    assert not hasattr(Client, "drop_websocket") and not hasattr(AsyncClient, "drop_websocket")


def test_one_name_per_concept():
    assert comfyfn.Interrupted is comfyfn.errors.Interrupted  # the error
    assert comfyfn.Stopped is comfyfn.events.Stopped  # the event carrying it
    assert comfyfn.Stopped.__dataclass_fields__["error"].type == "errors.Interrupted"
    assert not hasattr(comfyfn.events, "Interrupted")  # no second class of that name
    assert {"AsyncJob", "Job", "Stopped"} <= set(comfyfn.__all__)


# -- no I/O in constructors; one way to open and close --------------------------------------


@pytest.fixture
def no_engine(monkeypatch):
    """Looking up the local engine is I/O (it may even start ComfyUI): count it."""
    lookups: list[int] = []  # one 1 per lookup

    def resolve(server: str | None) -> str:
        lookups.append(1)
        return SERVER

    monkeypatch.delenv("COMFYFN_SERVER", raising=False)
    monkeypatch.setattr(_config, "resolve_server", resolve)
    monkeypatch.setattr(AsyncClient, "_socket_class", NoSocket)
    return lookups


def test_constructors_do_no_io(no_engine):
    threads = threading.active_count()
    clients: list[Client | AsyncClient] = [
        Client(),
        AsyncClient(),
        Client(timeout=1.0, transport=FakeComfy().transport()),
    ]
    assert no_engine == [] and threading.active_count() == threads
    for client in clients:
        with pytest.raises(ComfyError, match=r"not known yet.*looked up when the client opens"):
            _ = client.server
    assert isinstance(clients[0], Client)
    clients[0].close()  # never opened: nothing to do, and no thread started to do it
    assert threading.active_count() == threads


def test_a_given_server_is_known_before_opening(monkeypatch):
    monkeypatch.delenv("COMFYFN_SERVER", raising=False)
    assert Client("gpu-1:8188").server == "http://gpu-1:8188"
    monkeypatch.setenv("COMFYFN_SERVER", "http://gpu-2:8188/")
    assert AsyncClient().server == "http://gpu-2:8188"


@pytest.mark.anyio
async def test_the_async_client_opens_once_lazily_and_closes_for_good(no_engine):
    fake = FakeComfy()
    c = AsyncClient(transport=fake.transport())
    assert await asyncio.gather(c.queue(), c.queue()) == [EMPTY_QUEUE, EMPTY_QUEUE]
    assert no_engine == [1] and c.server == SERVER  # two first requests, one open
    await c.open()
    assert no_engine == [1]
    await c.aclose()
    await c.aclose()  # closing twice is fine
    for use in (c.queue, c.open, c.__aenter__):
        with pytest.raises(ComfyError, match="the client is closed"):
            await use()


def loop_threads() -> int:
    return sum(t.name == "comfyfn-client" for t in threading.enumerate())


def test_the_sync_client_opens_lazily_and_closes_for_good(no_engine):
    threads = loop_threads()
    fake = FakeComfy()
    c = Client(transport=fake.transport())
    assert c.queue() == EMPTY_QUEUE  # no `with`: opened here
    assert no_engine == [1] and loop_threads() == threads + 1
    c.close()
    assert loop_threads() == threads  # the loop thread is gone
    for use in (c.queue, c.open, c.__enter__):
        with pytest.raises(ComfyError, match="the client is closed"):
            use()


def test_with_opens_and_closes_the_sync_client(no_engine):
    with Client(transport=FakeComfy().transport()) as c:
        assert no_engine == [1]
        assert c.server == SERVER
    with pytest.raises(ComfyError, match="the client is closed"):
        c.system_stats()


@pytest.mark.anyio
async def test_a_job_of_a_closed_client_says_so():
    fake = FakeComfy()
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
    with pytest.raises(ComfyError, match="the client is closed"):
        await job.result()


def test_errors_from_a_bad_server_url_come_at_use_not_construction():
    c = Client("ftp://nowhere")
    with pytest.raises(comfyfn.ConfigError, match="not an http"):
        c.system_stats()
    c.close()


def test_the_transport_argument_is_an_httpx_async_transport():
    transport = httpx.MockTransport(FakeComfy())
    with Client(SERVER, transport=transport) as c:
        assert c.queue() == EMPTY_QUEUE

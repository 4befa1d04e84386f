"""The client against a fake ComfyUI that answers with the recorded real responses.

:class:`FakeComfy` (tests/support/fake_comfy.py, an ``httpx.MockTransport`` handler shared
with the other ``test_client_*``/``test_job_*`` modules) keeps a queue and a history the way
ComfyUI does, answering with the responses recorded from a real ComfyUI 0.3.75 in
tests/fixtures/comfyui/; any route can be overridden with hand-made garbage. Every bad answer
must end in a ComfyError naming the route, never a bare KeyError/TypeError.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest

from comfyfn.client._http import HttpSession
from comfyfn.client._job import JobSettings, _timings, _Watch, follow, post_prompt
from comfyfn.client._lookup import cancel, find_graph, queue_position
from comfyfn.client._socket import EventSocket
from comfyfn.errors import ComfyError, HTTPStatusError, ProtocolError
from comfyfn.events import Started, Succeeded, history_entry_problem, parse_message
from tests.support.fake_comfy import (
    GOOD_PNG,
    GRAPH,
    SERVER,
    FakeComfy,
    history_for,
    js,
    load_sample,
    spec,
)
from tests.support.sockets import NoSocket

pytestmark = pytest.mark.anyio


def text(body: str, status: int = 200) -> httpx.Response:
    return httpx.Response(status, text=body, headers={"content-type": "text/html"})


@pytest.fixture
def prompt_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def fake(prompt_id) -> FakeComfy:
    return FakeComfy(prompt_id)


# -- get_json: every JSON GET ---------------------------------------------------------------


async def test_non_json_answer_names_route_and_server(fake):
    fake.set("GET", "/system_stats", text("<html>502 Bad Gateway</html>"))
    session = fake.session(retries=2)
    with pytest.raises(ProtocolError) as info:
        await session.get_json("/system_stats")
    err = info.value
    assert (err.method, err.path, err.server) == ("GET", "/system_stats", SERVER)
    assert str(err).startswith(
        f"GET /system_stats from {SERVER} answered something that is not JSON: "
    )
    assert "<html>502 Bad Gateway" in str(err) and "<html>" in err.body
    assert fake.count("GET", "/system_stats") == 3  # garbage is retried like a lost answer


async def test_a_garbled_answer_once_is_retried_away(fake):
    fake.set("GET", "/queue", text("oops"), js({"queue_running": [], "queue_pending": []}))
    assert await fake.session().get_json("/queue", expect=dict) == {
        "queue_running": [],
        "queue_pending": [],
    }
    assert fake.count("GET", "/queue") == 2


@pytest.mark.parametrize(
    ("value", "kind"), [([], "a list"), ("x", "a string"), (None, "null"), (3, "a number")]
)
async def test_wrong_json_type_is_a_protocol_error(fake, value, kind):
    fake.set("GET", "/history", js(value))
    with pytest.raises(ProtocolError, match=f"GET /history from {SERVER} answered {kind} where an"):
        await fake.session(retries=2).get_dict("/history")
    assert fake.count("GET", "/history") == 1  # valid JSON of the wrong shape: asking is futile


@pytest.mark.parametrize("body", [b"\xff\xfe{]", b"[" * 100_000 + b"]" * 100_000])
async def test_undecodable_json_is_a_protocol_error(fake, body):
    fake.set("GET", "/queue", httpx.Response(200, content=body))
    with pytest.raises(ProtocolError, match="not JSON"):
        await fake.session(retries=0).get_json("/queue")


# -- POST /prompt ---------------------------------------------------------------------------


async def test_post_prompt_sends_our_prompt_id_and_reads_the_number(fake, prompt_id):
    number = await post_prompt(fake.session(), GRAPH, prompt_id, JobSettings(client_id="c"))
    assert number == 1
    ((body),) = fake.posted("/prompt")
    assert (body["prompt_id"], body["client_id"], body["prompt"]) == (prompt_id, "c", GRAPH)


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        (text("<html><form>Log in</form></html>"), "something that is not JSON"),
        (text("not json{"), "something that is not JSON"),
        (js({}), "an object without 'prompt_id' (empty)"),
        (js({"ok": True}), "an object without 'prompt_id' ('ok')"),
        (js(["prompt_id", 7]), "a list where an object was expected"),
        (js("ok"), "a string where an object was expected"),
    ],
)
async def test_an_unreadable_answer_is_looked_up_posted_once_more_then_named(answer, what):
    fake = FakeComfy()  # an auth proxy's login page, say: the server never sees the job
    fake.set("POST", "/prompt", answer)
    new_id = str(uuid.uuid4())
    expected = re.escape(f"POST /prompt from {SERVER} answered {what}")
    with pytest.raises(ProtocolError, match=expected):
        await post_prompt(fake.session(retries=3), GRAPH, new_id, JobSettings(client_id="c"))
    assert fake.count("POST", "/prompt") == 2  # retried once, not session.retries times
    posted, looked = fake.calls.index(("POST", "/prompt")), fake.calls.index(("GET", "/queue"))
    assert looked > posted  # looked up before posting again, never posted blindly


async def test_an_unreadable_answer_to_a_job_the_server_took_is_not_posted_again(prompt_id):
    fake = FakeComfy(prompt_id)  # the server has the job, whatever its answer said
    fake.set("POST", "/prompt", text("<html>hi</html>"))
    assert await post_prompt(fake.session(), GRAPH, prompt_id, JobSettings(client_id="c")) is None
    assert fake.count("POST", "/prompt") == 1


async def test_post_prompt_answer_with_odd_number_is_accepted(fake, prompt_id):
    fake.set("POST", "/prompt", js({"prompt_id": prompt_id, "number": "x"}))
    assert await post_prompt(fake.session(), GRAPH, prompt_id, JobSettings(client_id="c")) is None


# -- /history entries -----------------------------------------------------------------------


def _entry(prompt_id: str) -> dict:
    return history_for(prompt_id)[prompt_id]


def _without(key):
    def change(e):
        del e[key]

    return change


BAD_ENTRIES = {
    "no status": (_without("status"), "'status' is missing"),
    "no outputs": (_without("outputs"), "'outputs' is missing"),
    "status null": (lambda e: e.update(status=None), "'status' is null"),
    "outputs list": (lambda e: e.update(outputs=[]), "'outputs' is a list"),
    "messages dict": (lambda e: e["status"].update(messages={}), "messages are an object"),
    "message triple": (
        lambda e: e["status"]["messages"].append(["a", {}, 3]),
        "status message that is not",
    ),
    "message data list": (
        lambda e: e["status"]["messages"].append(["execution_start", []]),
        "status message that is not",
    ),
    "output list": (lambda e: e["outputs"].update({"2": []}), "output of node 2 is a list"),
    "image no name": (
        lambda e: e["outputs"]["2"]["images"][0].pop("filename"),
        "node 2 lists images without file names",
    ),
    "images dict": (
        lambda e: e["outputs"]["2"].update(images={"filename": "x.png"}),
        "node 2 lists images without file names",
    ),
}


def _watch(session: HttpSession, prompt_id: str) -> _Watch:
    return _Watch(session, NoSocket("ws://unused"), spec(prompt_id), None)


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
async def test_malformed_history_entry_in_probe_and_wait(fake, prompt_id, case):
    change, what = BAD_ENTRIES[case]
    answer = history_for(prompt_id)
    change(answer[prompt_id])
    fake.set("GET", f"/history/{prompt_id}", js(answer))
    watch = _watch(fake.session(retries=0), prompt_id)
    for call in (watch.probe(), watch.history_entry(1.0)):
        with pytest.raises(ProtocolError) as info:
            await call
        assert info.value.path == f"/history/{prompt_id}"
        assert str(info.value).startswith(f"GET /history/{prompt_id} from {SERVER} answered an")
        assert what in str(info.value)


def test_every_recorded_history_entry_is_well_formed():
    for name in (
        "history_ok.json",
        "history_cached.json",
        "history_execution_error.json",
        "history_interrupted.json",
    ):
        (entry,) = load_sample(name).values()
        assert history_entry_problem(entry) is None, name
    assert history_entry_problem(load_sample("history_zimage.json")) is None


async def test_history_answer_that_is_a_list_fails_the_probe(fake, prompt_id):
    fake.set("GET", f"/history/{prompt_id}", js([prompt_id]))
    with pytest.raises(ProtocolError, match="a list where an object was expected"):
        await _watch(fake.session(retries=0), prompt_id).probe()


# -- /queue ---------------------------------------------------------------------------------

BAD_QUEUES: dict[str, tuple[Any, str]] = {
    "list": ([], "a list where an object was expected"),
    "no running": ({"queue_pending": []}, "'queue_running' is missing"),
    "no pending": ({"queue_running": []}, "'queue_pending' is missing"),
    "running null": ({"queue_running": None, "queue_pending": []}, "'queue_running' is null"),
    "item str": ({"queue_running": ["x"], "queue_pending": []}, "item that is not"),
    "item short": ({"queue_running": [[1]], "queue_pending": []}, "item that is not"),
    "id number": ({"queue_running": [], "queue_pending": [[1, 2]]}, "item that is not"),
    "number str": ({"queue_running": [], "queue_pending": [["a", "p"]]}, "item that is not"),
}


@pytest.mark.parametrize("case", list(BAD_QUEUES))
async def test_malformed_queue_everywhere_it_is_read(fake, prompt_id, case):
    queue, what = BAD_QUEUES[case]
    fake.set("GET", "/queue", js(queue))
    fake.set("GET", f"/history/{prompt_id}", js({}))  # not finished: the probe reads /queue
    session = fake.session(retries=0)
    calls: list[Awaitable[object]] = [
        cancel(session, prompt_id),
        _watch(session, prompt_id).probe(),
        find_graph(session, prompt_id),
    ]
    for call in calls:
        with pytest.raises(ProtocolError, match=f"GET /queue from {SERVER} answered ") as info:
            await call
        assert what in str(info.value)
        assert (info.value.method, info.value.path) == ("GET", "/queue")
    with pytest.raises(ProtocolError, match="GET /queue from the server answered"):
        queue_position(queue, prompt_id)


def test_queue_position_on_a_recorded_busy_queue():
    queue = load_sample("get_queue_busy.json")
    running = queue["queue_running"][0][1]
    assert queue_position(queue, running) == 0
    pending = sorted(queue["queue_pending"], key=lambda item: item[0])
    for i, item in enumerate(pending):
        assert queue_position(queue, item[1]) == 1 + i
    assert queue_position(queue, "not-there") is None


async def test_find_graph_reads_the_recorded_queue_then_history(prompt_id):
    busy = load_sample("get_queue_busy.json")
    fake = FakeComfy()
    fake.set("GET", "/queue", js(busy))
    running_id, running_graph = busy["queue_running"][0][1], busy["queue_running"][0][2]
    assert await find_graph(fake.session(), running_id) == running_graph
    fake.set("GET", f"/history/{prompt_id}", js(history_for(prompt_id, "history_cached.json")))
    (recorded,) = load_sample("history_cached.json").values()
    assert await find_graph(fake.session(), prompt_id) == recorded["prompt"][2]
    assert await find_graph(fake.session(), "nobody") is None


@pytest.mark.parametrize(
    ("where", "outcome", "route"),
    [
        ("pending", "dequeued", "/queue"),
        ("running", "interrupted", "/interrupt"),
        (None, "absent", None),
    ],
)
async def test_cancel_dequeues_interrupts_or_finds_nothing(prompt_id, where, outcome, route):
    fake = FakeComfy()
    if where is not None:
        fake.queue_job(prompt_id, GRAPH, running=where == "running")
    assert await cancel(fake.session(), prompt_id) == outcome
    if route == "/queue":
        assert fake.posted("/queue") == [{"delete": [prompt_id]}]
    if route == "/interrupt":
        assert fake.posted("/interrupt") == [{"prompt_id": prompt_id}]
    if route is None:  # nothing but the look for the job routes, which 0.3.75 lacks
        assert fake.posts == [(f"/api/jobs/{prompt_id}/cancel", None)]


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.update(prompt=[0]),
        lambda e: e.update(prompt="x"),
        lambda e: e["prompt"].__setitem__(3, {"create_time": "soon"}),
        lambda e: e["prompt"].__setitem__(3, None),
        lambda e: e["status"]["messages"][0][1].update(timestamp=None),
    ],
)
def test_timings_fall_back_on_odd_history(change, prompt_id):
    entry = _entry(prompt_id)
    good = _timings(entry, time.monotonic())
    assert good.queued >= 0 and good.executed == pytest.approx(0.009)
    change(entry)
    odd = _timings(entry, time.monotonic() - 1.0)
    assert odd.queued == 0.0 and odd.executed == odd.total >= 1.0


# -- the websocket's input ------------------------------------------------------------------


def test_websocket_garbage_gives_no_events():
    from comfyfn.events import parse_binary_frame

    assert parse_message({"type": "progress", "data": {"prompt_id": "p"}}, "p") == []
    assert parse_message({"type": "progress", "data": ["p"]}, "p") == []
    assert (
        parse_message({"type": "execution_cached", "data": {"prompt_id": "p", "nodes": 3}}, "p")
        == []
    )
    bad_meta = (4).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"{nope" + GOOD_PNG
    assert parse_binary_frame(bad_meta) is None
    list_meta = (4).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"[]" + GOOD_PNG
    assert parse_binary_frame(list_meta) is None


def test_websocket_garbage_is_dropped_not_raised():
    socket = EventSocket("ws://127.0.0.1:9/ws")
    queue = socket.subscribe("p")
    for raw in ("[1, 2]", '"x"', "null", '{"type": "executing", "data": [1]}', "{nope"):
        socket._route_json(raw)
    socket._route_frame((4).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"{x}" + GOOD_PNG)
    assert queue.empty()
    socket._route_json(json.dumps({"type": "executing", "data": {"prompt_id": "p", "node": "1"}}))
    assert queue.get_nowait()["data"]["node"] == "1"


def test_unsubscribing_an_old_queue_leaves_the_new_one():
    socket = EventSocket("ws://127.0.0.1:9/ws")
    old = socket.subscribe("p")
    new = socket.subscribe("p")
    socket.unsubscribe("p", old)
    socket.nudge("p")
    assert not new.empty() and old.empty()


# -- following a job at the protocol level --------------------------------------------------


async def _follow(session: HttpSession, prompt_id: str, **settings) -> list:
    socket = NoSocket("ws://unused")
    return [ev async for ev in follow(session, socket, spec(prompt_id, **settings), None)]


async def test_following_a_finished_job_with_recorded_answers(fake, prompt_id):
    events = await _follow(fake.session(), prompt_id)
    assert isinstance(events[-1], Succeeded)
    (image,) = events[-1].generation.images
    assert image.data == GOOD_PNG and image.filename == "t_00001_.png"
    assert fake.count("GET", "/view") == 1


async def test_garbled_history_for_ever_fails_the_job_with_the_route(fake, prompt_id):
    fake.set("GET", f"/history/{prompt_id}", text("<html>maintenance</html>"))
    with pytest.raises(ProtocolError, match=f"GET /history/{prompt_id} from {SERVER} answered"):
        await _follow(fake.session(retries=1), prompt_id)
    assert fake.count("GET", "/queue") >= 2  # the job was looked up to be cancelled


@pytest.mark.parametrize(("cancel_on_exit", "interrupts"), [(True, 1), (False, 0)])
async def test_leaving_a_running_job_cancels_it_unless_told_not_to(
    prompt_id, cancel_on_exit, interrupts
):
    fake = FakeComfy(hold="running")
    fake.queue_job(prompt_id, GRAPH, running=True)
    job_spec = spec(prompt_id, cancel_on_exit=cancel_on_exit)
    job = follow(fake.session(), NoSocket("ws://unused"), job_spec, None)
    async for event in job:
        if isinstance(event, Started):
            break
    await job.aclose()
    assert fake.count("POST", "/interrupt") == interrupts


# -- retries: short waits, and nothing printed ------------------------------------------------


async def test_three_retries_take_well_under_a_second(fake):
    """Slow by design (~0.4 s): it times the real backoff schedule."""
    fake.set("GET", "/queue", httpx.Response(503, text="busy"))
    session = fake.session(retries=3)
    start = time.monotonic()
    with pytest.raises(HTTPStatusError):
        await session.get_json("/queue")
    elapsed = time.monotonic() - start
    assert fake.count("GET", "/queue") == 4
    assert 0.35 <= elapsed < 1.0  # 0.05 + 0.1 + 0.2 s of backoff plus at most 3 x 0.05 jitter


async def test_retries_are_logged_at_debug_on_the_comfyfn_logger(fake, caplog):
    fake.set("GET", "/queue", httpx.Response(503), js({"queue_running": [], "queue_pending": []}))
    with caplog.at_level("DEBUG", logger="comfyfn"):
        await fake.session().get_json("/queue")
    (record,) = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert record.name == "comfyfn" and record.levelname == "DEBUG"
    assert "GET /queue" in record.getMessage() and "HTTP 503" in record.getMessage()


async def test_every_error_is_a_comfy_error(prompt_id):
    """A catch-all: whatever garbage the routes give, only ComfyErrors come out."""
    garbage = [text("nope"), js([]), js({}), js({"x": 1}), js(None)]
    for answer in garbage:
        fake = FakeComfy(prompt_id)
        fake.set("GET", f"/history/{prompt_id}", answer)
        fake.set("GET", "/queue", answer)
        with pytest.raises(ComfyError):
            await asyncio.wait_for(_follow(fake.session(retries=0), prompt_id, timeout=2.0), 10)

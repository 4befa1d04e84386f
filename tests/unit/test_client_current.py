"""The client on current ComfyUI (0.28) as well as 0.3.75: cancel through the job routes,
canonical prompt ids, throttled progress and ``progress_state``.

:class:`FakeComfy28` is :class:`tests.support.fake_comfy.FakeComfy` with 0.28's job routes,
answering as its source does (``server.py``, ``comfy_execution/jobs.py``); the plain
FakeComfy answers those routes as 0.3.75 does (a 405: its front end is served at ``/``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid

import httpx
import pytest

import comfyfn
from comfyfn import AsyncClient, Client
from comfyfn.client._lookup import cancel
from comfyfn.events import Progress, Queued, Started, Stopped, Succeeded, parse_message
from tests.support.fake_comfy import GRAPH, SERVER, FakeComfy, history_for, js
from tests.support.sockets import NoSocket, ReplaySocket

pytestmark = pytest.mark.anyio

#: POST /prompt with a non-canonical prompt_id on ComfyUI 0.28.0 (wsprobe-home28.json)
INVALID_PROMPT_ID = {
    "error": {
        "type": "invalid_prompt_id",
        "message": "prompt_id must be a valid UUID",
        "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
        "omit it to let the server generate one",
        "extra_info": {},
    },
    "node_errors": {},
}


class FakeComfy28(FakeComfy):
    """FakeComfy with ComfyUI 0.28's job routes and prompt-id rule.

    ``POST /api/jobs/{id}/cancel`` dequeues a pending job or interrupts a running one in one
    step and answers ``{"cancelled": bool}`` (False for finished or unknown ids: safe to
    repeat); ``GET /api/jobs/{id}`` is the job while the server knows it, else a 404.
    """

    def answer(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        if path.startswith("/api/jobs/"):
            job_id = path.removeprefix("/api/jobs/").removesuffix("/cancel")
            if method == "POST" and path.endswith("/cancel"):
                return js({"cancelled": self.cancel_job(job_id)})
            if method == "GET" and (status := self.status(job_id)) is not None:
                return js({"id": job_id, "status": status, "priority": self.number})
            return httpx.Response(404, json={"error": "Job not found"})
        return super().answer(request)

    def post_prompt(self, body: dict) -> httpx.Response:
        prompt_id = body.get("prompt_id")
        if prompt_id is not None and str(uuid.UUID(prompt_id)) != prompt_id:
            return httpx.Response(400, json=INVALID_PROMPT_ID)
        return super().post_prompt(body)

    def cancel_job(self, job_id: str) -> bool:
        if job_id in self.pending:
            self.pending.remove(job_id)
            return True
        if job_id in self.running:
            self.finish(job_id, "history_interrupted.json")
            return True
        return False

    def status(self, job_id: str) -> str | None:
        if job_id in self.pending:
            return "pending"
        if job_id in self.running:
            return "in_progress"
        return "cancelled" if job_id in self.history else None


@pytest.fixture(autouse=True)
def no_websocket(monkeypatch):
    monkeypatch.setattr(AsyncClient, "_socket_class", NoSocket)


@pytest.fixture
def prompt_id() -> str:
    return str(uuid.uuid4())


def route(prompt_id: str) -> str:
    return f"/api/jobs/{prompt_id}/cancel"


# -- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("hold", "outcome"), [("pending", "dequeued"), ("running", "interrupted")])
async def test_cancel_uses_the_job_route_where_the_server_has_it(hold, outcome):
    fake = FakeComfy28(hold=hold)
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        events = job.events()
        assert isinstance(await anext(events), Queued)
        if hold == "running":
            assert isinstance(await anext(events), Started)
        before = len(fake.calls)
        assert await job.cancel() == outcome
        assert await job.cancel() == "absent"  # safe to repeat: nothing left to cancel
        rest = [event async for event in events]
    pid = job.prompt_id
    assert fake.calls[before:][:3] == [
        ("POST", route(pid)),
        ("GET", f"/api/jobs/{pid}"),  # what the cancel did: a dequeued job is gone
        ("POST", route(pid)),
    ]
    assert fake.posted("/queue") == fake.posted("/interrupt") == []  # no look-then-act race
    assert isinstance(rest[-1], Stopped) and rest[-1].error.lost is (hold == "pending")


async def test_cancel_of_a_finished_or_unknown_job_is_absent_on_0_28(prompt_id):
    fake = FakeComfy28(prompt_id)  # finished: in the history
    session = fake.session()
    assert await cancel(session, prompt_id) == "absent"
    assert await cancel(session, str(uuid.uuid4())) == "absent"
    assert [path for path, _ in fake.posts] == [route(prompt_id), fake.posts[1][0]]
    assert fake.count("GET", "/queue") == 0


@pytest.mark.parametrize("status", [404, 405])
async def test_an_older_server_is_found_out_by_the_first_cancel_only(status):
    fake = FakeComfy(hold="pending")  # 0.3.75: no job routes
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        first = await c.submit_graph(GRAPH, validate=False)
        second = await c.submit_graph(GRAPH, validate=False)
        fake.set("POST", route(first.prompt_id), httpx.Response(status, text="Not here"))
        assert await first.cancel() == "dequeued"
        assert await second.cancel() == "dequeued"
        assert await first.cancel() == "absent"
    asked = [path for path, _ in fake.posts if path.startswith("/api/jobs/")]
    assert asked == [route(first.prompt_id)]  # once per client; then /queue and /interrupt
    assert fake.posted("/queue") == [{"delete": [first.prompt_id]}, {"delete": [second.prompt_id]}]


async def test_the_deadline_and_leaving_early_cancel_through_the_route():
    fake = FakeComfy28(hold="running")
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        timed = await c.submit_graph(GRAPH, validate=False, timeout=0.2)
        with pytest.raises(comfyfn.GenerationTimeout):
            await timed.result()
        left = await c.submit_graph(GRAPH, validate=False)
        async with contextlib.aclosing(left.events()) as events:
            async for event in events:
                if isinstance(event, Started):
                    break
    posts = [path for path, _ in fake.posts if path != "/prompt"]
    assert posts == [route(timed.prompt_id), route(left.prompt_id)]
    assert fake.running == []


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (js({"cancelled": "yes"}), "'cancelled' is a string, not a boolean"),
        (js(["cancelled"]), "a list where an object was expected"),
        (httpx.Response(404, text="gone"), "answered HTTP 404"),  # after it worked before
    ],
)
async def test_a_wrong_answer_from_the_route_is_an_error_naming_it(prompt_id, answer, error):
    fake = FakeComfy28(prompt_id)
    session = fake.session(retries=0)
    assert await cancel(session, prompt_id) == "absent"  # the route is known to exist now
    fake.set("POST", route(prompt_id), answer)
    with pytest.raises(comfyfn.TransportError, match=error) as info:
        await cancel(session, prompt_id)
    assert route(prompt_id) in str(info.value)


# -- prompt ids -------------------------------------------------------------------------------

CANONICAL = "605dca07-1c24-4bc5-8a71-0e3f44969ffd"
BAD_IDS = {
    "MY-JOB-1": "is not a UUID",
    CANONICAL.upper(): "has uppercase letters",
    CANONICAL.replace("-", ""): "is not in canonical form",
    "{" + CANONICAL + "}": "is not in canonical form",
    "urn:uuid:" + CANONICAL: "is not in canonical form",
    f" {CANONICAL}": "is not a UUID",
}


@pytest.mark.parametrize("bad", list(BAD_IDS))
async def test_a_non_canonical_prompt_id_is_refused_before_anything_is_sent(bad):
    fake = FakeComfy28()
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        with pytest.raises(comfyfn.ConfigError) as info:
            await c.submit_graph(GRAPH, prompt_id=bad)  # validate=True: not even that ran
    message = str(info.value)
    assert message.startswith(f"prompt_id {bad!r} {BAD_IDS[bad]}")
    if BAD_IDS[bad] != "is not a UUID":
        assert message.endswith(f"ComfyUI takes only {CANONICAL!r}")
    assert fake.calls == []


def test_the_sync_client_checks_the_prompt_id_too():
    fake = FakeComfy28()
    with Client(SERVER, transport=fake.transport()) as c:
        with pytest.raises(comfyfn.ConfigError, match="prompt_id must be a string, not int"):
            c.submit_graph(GRAPH, validate=False, prompt_id=42)  # type: ignore[arg-type]
        job = c.submit_graph(GRAPH, validate=False, prompt_id=CANONICAL)
        assert job.prompt_id == CANONICAL and job.result().prompt_id == CANONICAL


async def test_the_ids_comfyfn_makes_are_canonical_and_0_28_takes_them():
    fake = FakeComfy28()
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        for _ in range(5):
            await (await c.submit_graph(GRAPH, validate=False)).result()
    ids = [body["prompt_id"] for body in fake.posted("/prompt")]
    assert len(set(ids)) == 5 and all(str(uuid.UUID(i)) == i for i in ids)


# -- throttled progress and progress_state ----------------------------------------------------

SLEEP_IMAGE = {"filename": "sleep_00001_.png", "subfolder": "", "type": "output"}
#: A real ComfyUI 0.28.0 session, compacted (tests/support/graphs.py sleep_graph: 10 steps of 50 ms;
#: recorded 2026-11-26): progress is throttled to ≥ 100 ms apart, so steps 1, 3, 5, 7, 9 and
#: the last arrive. ``("progress_state", {node: (state, value, max)})`` stands for the full
#: message, rebuilt by :func:`progress_state` with the keys 0.28 sends.
THROTTLED_0_28: list[tuple[str, dict]] = [
    ("execution_start", {"timestamp": 1795705836328}),
    ("execution_cached", {"nodes": [], "timestamp": 1795705836329}),
    ("progress_state", {"1": ("running", 0.0, 1.0)}),
    ("executing", {"node": "1", "display_node": "1"}),
    ("progress_state", {"1": ("finished", 1.0, 1.0)}),
    ("progress_state", {"1": ("finished", 1.0, 1.0), "2": ("running", 0.0, 1.0)}),
    ("executing", {"node": "2", "display_node": "2"}),
    ("progress_state", {"1": ("finished", 1.0, 1.0), "2": ("running", 1, 10)}),
    ("progress", {"value": 1, "max": 10, "node": "2"}),
    ("progress_state", {"1": ("finished", 1.0, 1.0), "2": ("running", 3, 10)}),
    ("progress", {"value": 3, "max": 10, "node": "2"}),
    ("progress_state", {"1": ("finished", 1.0, 1.0), "2": ("running", 5, 10)}),
    ("progress", {"value": 5, "max": 10, "node": "2"}),
    ("progress_state", {"1": ("finished", 1.0, 1.0), "2": ("running", 7, 10)}),
    ("progress", {"value": 7, "max": 10, "node": "2"}),
    ("progress_state", {"1": ("finished", 1.0, 1.0), "2": ("running", 9, 10)}),
    ("progress", {"value": 9, "max": 10, "node": "2"}),
    ("progress_state", {"1": ("finished", 1.0, 1.0), "2": ("running", 10, 10)}),
    ("progress", {"value": 10, "max": 10, "node": "2"}),
    ("progress_state", {"1": ("finished", 1.0, 1.0), "2": ("finished", 10, 10)}),
    (
        "progress_state",
        {"1": ("finished", 1.0, 1.0), "2": ("finished", 10, 10), "3": ("running", 0.0, 1.0)},
    ),
    ("executing", {"node": "3", "display_node": "3"}),
    ("executed", {"node": "3", "display_node": "3", "output": {"images": [SLEEP_IMAGE]}}),
    (
        "progress_state",
        {"1": ("finished", 1.0, 1.0), "2": ("finished", 10, 10), "3": ("finished", 1.0, 1.0)},
    ),
    ("execution_success", {"timestamp": 1795705836878}),
    ("executing", {"node": None}),
]
SLEEP_GRAPH = {
    "1": GRAPH["1"],
    "2": {"class_type": "ComfyfnSleep", "inputs": {"images": ["1", 0], "milliseconds": 500}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "sleep"}},
}


def progress_state(prompt_id: str, nodes: dict) -> dict:
    """A ``progress_state`` message as 0.28 sends it."""
    return {
        node: {
            "value": value,
            "max": most,
            "state": state,
            "node_id": node,
            "prompt_id": prompt_id,
            "display_node_id": node,
            "parent_node_id": None,
            "real_node_id": node,
        }
        for node, (state, value, most) in nodes.items()
    }


def recorded_session(prompt_id: str) -> list[dict]:
    messages = []
    for kind, data in THROTTLED_0_28:
        if kind == "progress_state":
            data = {"nodes": progress_state(prompt_id, data)}
        messages.append({"type": kind, "data": {**data, "prompt_id": prompt_id}})
    return messages


async def test_throttled_progress_gives_right_events_and_progress_state_is_quiet(
    monkeypatch, caplog
):
    monkeypatch.setattr(AsyncClient, "_socket_class", ReplaySocket)
    fake = FakeComfy28(steps=3)
    prompt_id = str(uuid.uuid4())
    entry = history_for(prompt_id, graph=SLEEP_GRAPH)
    entry[prompt_id]["outputs"] = {"3": {"images": [SLEEP_IMAGE]}}
    fake.set("GET", f"/history/{prompt_id}", js({}), js(entry))
    caplog.set_level(logging.DEBUG)
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(SLEEP_GRAPH, validate=False, prompt_id=prompt_id)
        assert c._socket is not None
        for message in recorded_session(prompt_id):
            c._socket._route_json(json.dumps(message))
        events = [e async for e in job.events()]
    progress = [(e.value, e.max) for e in events if isinstance(e, Progress)]
    assert progress == [(1, 10), (3, 10), (5, 10), (7, 10), (9, 10), (10, 10)]
    assert {e.class_type for e in events if isinstance(e, Progress)} == {"ComfyfnSleep"}
    assert [type(e).__name__ for e in events if not isinstance(e, Progress)] == [
        "Queued",
        "Started",
        "NodeStarted",
        "NodeStarted",
        "NodeStarted",
        "NodeFinished",
        "Succeeded",
    ]
    assert isinstance(events[-1], Succeeded)
    assert events[-1].generation.images[0].filename == "sleep_00001_.png"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any("progress_state" in r.getMessage() for r in caplog.records)


def test_progress_state_gives_no_events_on_its_own():
    for message in recorded_session("p"):
        if message["type"] == "progress_state":
            assert parse_message(message, "p", class_types={"2": "ComfyfnSleep"}) == []

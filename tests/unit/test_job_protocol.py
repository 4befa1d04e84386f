"""The protocol under a job: the websocket replayed from recordings, the history race, lost
answers to POST /prompt, retries — each through the real client and a fake ComfyUI.

The websocket is :class:`ReplaySocket` (tests/support/sockets.py; the private
``AsyncClient._socket_class`` seam): it never connects, and says the messages a real ComfyUI
0.3.75 sent (tests/fixtures/comfyui/``ws_*.json``), re-keyed to the job, when the fake
server accepts the job.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from types import SimpleNamespace

import httpx
import pytest

import comfyfn
from comfyfn import AsyncClient
from comfyfn.client import _lookup
from comfyfn.client._job import JobSettings, JobSpec, follow
from comfyfn.events import (
    Failed,
    NodeFinished,
    NodeStarted,
    Preview,
    Queued,
    Started,
    Stopped,
    Succeeded,
)
from tests.support.fake_comfy import (
    FIXTURES,
    GRAPH,
    SERVER,
    FakeComfy,
    history_for,
    js,
    spec,
)
from tests.support.sockets import FRAME, NoSocket, ReplaySocket

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def replay_socket(monkeypatch):
    monkeypatch.setattr(AsyncClient, "_socket_class", ReplaySocket)


def on_post(fake: FakeComfy, client: AsyncClient, recording: str, **kw) -> None:
    """When the fake server queues a job, the socket says the recording for it."""
    answer = fake.post_prompt

    def post_prompt(body: dict) -> httpx.Response:
        response = answer(body)
        assert isinstance(client._socket, ReplaySocket)
        client._socket.say(recording, body["prompt_id"], **kw)
        return response

    fake.post_prompt = post_prompt  # type: ignore[method-assign]  # says the recording too


# -- the websocket, replayed ----------------------------------------------------------------


async def test_recorded_run_over_the_socket_waits_out_the_history_race():
    """ComfyUI says execution_success (and executing null) before it writes the history
    entry: the job waits for the entry instead of reporting no outputs."""
    fake = FakeComfy(steps=4)  # the entry appears at the 4th GET /history/<id>
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        on_post(fake, c, "ws_simple_run.json")
        job = await c.submit_graph(GRAPH, validate=False)
        events = [e async for e in job.events()]
    assert [type(e).__name__ for e in events] == [
        "Queued",
        "Started",
        "NodeStarted",
        "NodeStarted",
        "NodeFinished",
        "Succeeded",
    ]
    assert events[2:4] == [
        NodeStarted(job.prompt_id, "1", "EmptyImage"),
        NodeStarted(job.prompt_id, "2", "SaveImage"),
    ]
    assert fake.count("GET", f"/history/{job.prompt_id}") == 4  # three empty answers first
    assert fake.count("GET", "/queue") == 1  # its place in the queue; the socket said the rest


async def test_history_that_never_appears_is_no_outputs_not_a_hang():
    fake = FakeComfy(hold="running")
    socket = ReplaySocket("ws://unused")
    job = JobSpec("p-race", GRAPH, {}, JobSettings(client_id="c", history_wait=0.2))
    subscription = socket.subscribe("p-race")
    fake.queue_job("p-race", GRAPH, running=True)
    socket.say("ws_simple_run.json", "p-race")
    start = time.monotonic()
    with pytest.raises(comfyfn.NoOutputs, match=r"did not appear within 0\.2s"):
        async for _event in follow(fake.session(), socket, job, subscription):
            pass
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize(
    ("recording", "history", "final", "error"),
    [
        ("ws_execution_error.json", "history_execution_error.json", "Failed", "VAELoader"),
        ("ws_interrupted.json", "history_interrupted.json", "Stopped", "ImageBlur"),
    ],
)
async def test_recorded_failures_over_the_socket(recording, history, final, error):
    fake = FakeComfy(finish_with=history)
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        on_post(fake, c, recording)
        job = await c.submit_graph(GRAPH, validate=False)
        events = [e async for e in job.events()]
    last = events[-1]
    assert type(last).__name__ == final and isinstance(last, Failed | Stopped)
    assert last.error.class_type == error
    assert fake.count("GET", f"/history/{job.prompt_id}") == 0  # the socket said how it ended


async def test_a_dropped_socket_falls_back_to_polling_and_replays_the_history():
    fake = FakeComfy()
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        on_post(fake, c, "ws_simple_run.json", until="executing")
        job = await c.submit_graph(GRAPH, validate=False)
        events = job.events()
        seen = [await anext(events), await anext(events)]
        assert isinstance(c._socket, ReplaySocket)
        c._socket.lose()
        seen += [e async for e in events]
    assert [type(e).__name__ for e in seen] == ["Queued", "Started", "NodeFinished", "Succeeded"]
    assert isinstance(seen[2], NodeFinished)
    assert seen[2] == NodeFinished(job.prompt_id, "2", seen[2].output, "SaveImage")


async def test_save_image_websocket_frames_are_the_images():
    graph = {
        "1": GRAPH["1"],
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    fake = FakeComfy()
    prompt_id = str(uuid.uuid4())
    entry = history_for(prompt_id, graph=graph)
    entry[prompt_id]["outputs"] = {}  # ComfyUI records no outputs for this node
    fake.set("GET", f"/history/{prompt_id}", js(entry))
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        on_post(fake, c, "ws_saveimagewebsocket.json")
        job = await c.submit_graph(graph, validate=False, prompt_id=prompt_id)
        generation = await job.result()
    assert [(i.type, i.node_id, i.data) for i in generation.images] == [
        ("websocket", "2", FRAME[8:]),
        ("websocket", "2", FRAME[8:]),
    ]
    assert fake.count("GET", "/view") == 0


async def test_a_deleted_job_is_noticed_after_the_check_interval():
    fake = FakeComfy(hold="pending")
    async with AsyncClient(SERVER, transport=fake.transport(), check_interval=0.1) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        fake.pending.clear()  # deleted by someone else: the socket says nothing
        events = [e async for e in job.events()]
    assert isinstance(events[-1], Stopped) and events[-1].error.lost


# -- lost answers to POST /prompt -----------------------------------------------------------


class Lossy(httpx.AsyncBaseTransport):
    """In front of the fake: loses the next POST /prompt requests, or their answers."""

    def __init__(self, fake: FakeComfy, *, requests: int = 0, answers: int = 0) -> None:
        self.fake, self.requests, self.answers = fake, requests, answers

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/prompt" and self.requests:
            self.requests -= 1
            raise httpx.ReadError("connection reset before the server read it", request=request)
        response = self.fake(request)
        if request.url.path == "/prompt" and self.answers:
            self.answers -= 1
            raise httpx.ReadError("connection reset before the answer came", request=request)
        return response


@pytest.fixture
def recheck_pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses before looking a lost submission up a second time, recorded instead of
    waited for (sleep is all the lookup module takes from ``asyncio``)."""
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(_lookup, "asyncio", SimpleNamespace(sleep=pause))
    return pauses


async def test_a_lost_answer_is_looked_up_not_posted_again(monkeypatch):
    monkeypatch.setattr(AsyncClient, "_socket_class", NoSocket)
    fake = FakeComfy()
    async with AsyncClient(SERVER, transport=Lossy(fake, answers=1)) as c:
        generation = await (await c.submit_graph(GRAPH, validate=False)).result()
    assert fake.count("POST", "/prompt") == 1  # found in /queue after the lost answer
    assert generation.images and len(fake.history) == 1


async def test_a_lost_request_is_posted_again_once(monkeypatch, recheck_pauses):
    monkeypatch.setattr(AsyncClient, "_socket_class", NoSocket)
    fake = FakeComfy()
    lossy = Lossy(fake, requests=1)
    async with AsyncClient(SERVER, transport=lossy) as c:
        generation = await (await c.submit_graph(GRAPH, validate=False)).result()
    assert fake.count("POST", "/prompt") == 1 and lossy.requests == 0  # 2 sent, 1 arrived
    assert recheck_pauses == [0.25]  # looked up twice, a moment apart, before posting again
    assert generation.images and len(fake.history) == 1


async def test_persistent_loss_is_a_clear_error_and_nothing_runs(recheck_pauses):
    fake = FakeComfy()
    async with AsyncClient(SERVER, transport=Lossy(fake, requests=100), retries=2) as c:
        with pytest.raises(comfyfn.TransportError, match=r"POST /prompt to .* kept failing"):
            await c.submit_graph(GRAPH, validate=False)
    assert fake.count("POST", "/prompt") == 0 and fake.pending == fake.running == []
    assert recheck_pauses == [0.25] * 3  # each of the 3 attempts looked up twice


# -- retries --------------------------------------------------------------------------------


async def test_transient_answers_are_retried_and_the_job_runs_once(monkeypatch):
    monkeypatch.setattr(AsyncClient, "_socket_class", NoSocket)
    fake = FakeComfy()
    fake.set("GET", "/queue", httpx.Response(503), js({"queue_running": [], "queue_pending": []}))
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        fake.set(
            "GET",
            f"/history/{job.prompt_id}",
            httpx.Response(502),
            js(history_for(job.prompt_id, graph=GRAPH)),
        )
        generation = await job.result()
    assert generation.prompt_id == job.prompt_id
    assert fake.count("GET", "/queue") >= 2 and fake.count("POST", "/prompt") == 1


async def test_a_started_job_over_a_silent_socket_is_probed(monkeypatch):
    fake = FakeComfy(hold="running")
    async with AsyncClient(SERVER, transport=fake.transport(), check_interval=0.05) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        events = job.events()
        queued = await anext(events)
        assert isinstance(queued, Queued) and queued.position == 0
        assert isinstance(await anext(events), Started)  # learnt from /queue, not the socket
        await events.aclose()
    assert fake.posted("/interrupt") == [{"prompt_id": job.prompt_id}]


def test_spec_deadline_counts_from_submission():
    job = spec("p", timeout=5.0)
    assert job.deadline == pytest.approx(job.since + 5.0)
    assert spec("p").deadline is None


async def test_sampler_previews_are_events_and_websocket_saves_stay_images():
    graph = {
        "1": GRAPH["1"],
        "3": {"class_type": "KSampler", "inputs": {}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    prompt_id = str(uuid.uuid4())
    fake = FakeComfy()
    entry = history_for(prompt_id, graph=graph)
    entry[prompt_id]["outputs"] = {}
    fake.set("GET", f"/history/{prompt_id}", js(entry))
    preview = b"\xff\xd8\xff-a-jpeg-preview"
    meta = json.dumps({"node_id": "3", "prompt_id": prompt_id, "image_type": "image/jpeg"})
    with_meta = struct.pack(">II", 4, len(meta)) + meta.encode() + preview

    def say(socket: ReplaySocket) -> None:
        def send(kind: str, **data: object) -> None:
            socket._route_json(json.dumps({"type": kind, "data": {**data, "prompt_id": prompt_id}}))

        send("execution_start")
        send("executing", node="3")
        socket._route_frame(struct.pack(">II", 1, 1) + preview)  # legacy: before any step
        send("progress", value=2, max=4, node="3")
        socket._route_frame(with_meta)
        send("executing", node="2")
        socket._route_frame(FRAME)  # the SaveImageWebsocket image
        send("executing", node=None)
        send("execution_success")

    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        answer = fake.post_prompt

        def post_prompt(body: dict) -> httpx.Response:
            response = answer(body)
            assert isinstance(c._socket, ReplaySocket)
            say(c._socket)
            return response

        fake.post_prompt = post_prompt  # type: ignore[method-assign]  # says it too
        job = await c.submit_graph(graph, validate=False, prompt_id=prompt_id)
        events = [e async for e in job.events()]
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews == [
        Preview(prompt_id, "3", preview, None, "image/jpeg", "KSampler"),
        Preview(prompt_id, "3", preview, 2, "image/jpeg", "KSampler"),
    ]
    last = events[-1]
    assert isinstance(last, Succeeded)
    assert [(i.type, i.node_id, i.data) for i in last.generation.images] == [
        ("websocket", "2", FRAME[8:])
    ]


async def test_a_job_on_a_working_websocket_costs_one_post_one_history_and_its_downloads():
    """Followed by its events, a job asks the server only for what the socket cannot carry:
    its place in the queue (status messages count jobs but name none), the history entry,
    once, and each output, once."""
    fake = FakeComfy(steps=1)  # the entry is there at the first GET /history/<id>
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        on_post(fake, c, "ws_simple_run.json")
        job = await c.submit_graph(GRAPH, validate=False)
        events = [e async for e in job.events()]
    first, last = events[0], events[-1]
    assert isinstance(first, Queued) and first.position == 0
    assert isinstance(last, Succeeded)
    outputs = len(last.generation.images)
    assert sorted(fake.calls) == sorted(
        [("POST", "/prompt"), ("GET", "/queue"), ("GET", f"/history/{job.prompt_id}")]
        + [("GET", "/view")] * outputs
    )
    assert len(fake.calls) == 3 + outputs


async def test_servers_that_answer_the_same_definitions_share_one_parsed_copy():
    info = json.loads(
        (FIXTURES.parents[1] / "fixtures" / "comfyui").joinpath("history_ok.json").read_text()
    )  # any JSON object stands for the definitions
    first, second = FakeComfy(object_info=info), FakeComfy(object_info=info)
    async with (
        AsyncClient(SERVER, transport=first.transport()) as a,
        AsyncClient(SERVER, transport=second.transport()) as b,
    ):
        answers = await asyncio.gather(a.object_info(), a.object_info(), b.object_info())
        assert await a.object_info() is answers[0]
    assert answers[0] is answers[1] is answers[2]  # one parsed copy for both servers
    assert first.count("GET", "/object_info") == 1  # concurrent asks: one fetch per server
    assert second.count("GET", "/object_info") == 1

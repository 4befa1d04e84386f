"""The client against answers a real ComfyUI does not give: garbage, wrong shapes, damaged images.

A fake server (httpx.MockTransport) answers with the recorded real responses in
tests/fixtures/comfyui/ for the good cases and with hand-made garbage for the bad ones. Every
bad answer must end in a ComfyError naming the route, never a bare KeyError/TypeError.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image as PIL

from comfyfn.client._http import HttpSession
from comfyfn.client._job import (
    JobSettings,
    _timings,
    _Watch,
    cancel,
    queue_position,
    run_job,
    submit,
)
from comfyfn.client._outputs import fetch_images
from comfyfn.client._socket import EventSocket
from comfyfn.errors import (
    ComfyError,
    CorruptOutput,
    HTTPStatusError,
    ProtocolError,
)
from comfyfn.events import (
    BinaryFrame,
    Started,
    Succeeded,
    history_entry_problem,
    parse_binary_frame,
    parse_message,
)

pytestmark = pytest.mark.anyio

SERVER = "http://comfy.test"
GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 1},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}
TYPES = {"1": "EmptyImage", "2": "SaveImage"}
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]
FIXTURES = Path(__file__).parents[1] / "fixtures" / "comfyui"


def load_sample(name: str):
    """A response recorded from a real ComfyUI 0.3.75."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def png(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    PIL.effect_noise(size, 40).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


GOOD_PNG = png()
HALF_PNG = GOOD_PNG[: len(GOOD_PNG) // 2]


def history_for(prompt_id: str, name: str = "history_ok.json") -> dict:
    """A recorded history answer, re-keyed to ``prompt_id``."""
    (entry,) = load_sample(name).values()
    entry = copy.deepcopy(entry)
    entry["prompt"][1] = prompt_id
    return {prompt_id: entry}


class FakeComfy:
    """Routes (method, path) to answers; a list is served in order, its last answer repeating."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.calls: list[tuple[str, str]] = []
        self.routes: dict[tuple[str, str], list[Answer]] = {
            ("POST", "/prompt"): [
                httpx.Response(200, json={"prompt_id": prompt_id, "number": 7, "node_errors": {}})
            ],
            ("GET", "/queue"): [
                httpx.Response(200, json={"queue_running": [], "queue_pending": []})
            ],
            ("GET", f"/history/{prompt_id}"): [httpx.Response(200, json=history_for(prompt_id))],
            ("GET", "/view"): [httpx.Response(200, content=GOOD_PNG)],
            ("POST", "/queue"): [httpx.Response(200)],
            ("POST", "/interrupt"): [httpx.Response(200)],
        }

    def set(self, method: str, path: str, *answers: Answer) -> None:
        self.routes[(method, path)] = list(answers)

    def count(self, method: str, path: str) -> int:
        return self.calls.count((method, path))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.path)
        self.calls.append(key)
        answers = self.routes.get(key)
        if not answers:
            return httpx.Response(404, text="404: Not Found")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        response = answer(request) if callable(answer) else answer
        # MockTransport may hand the same Response object out twice: copy its parts.
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )

    def session(self, retries: int = 3) -> HttpSession:
        return HttpSession(
            SERVER, httpx.Timeout(5.0), retries=retries, transport=httpx.MockTransport(self)
        )


@pytest.fixture
def prompt_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def fake(prompt_id) -> FakeComfy:
    return FakeComfy(prompt_id)


def text(body: str, status: int = 200) -> httpx.Response:
    return httpx.Response(status, text=body, headers={"content-type": "text/html"})


def js(value: object) -> httpx.Response:
    body = json.dumps(value).encode()  # json=None would send an empty body, not null
    return httpx.Response(200, content=body, headers={"content-type": "application/json"})


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
        await fake.session(retries=2).get_json("/history", expect=dict)
    assert (
        fake.count("GET", "/history") == 1
    )  # valid JSON of the wrong shape: asking again is futile


@pytest.mark.parametrize("body", [b"\xff\xfe{]", b"[" * 100_000 + b"]" * 100_000])
async def test_undecodable_json_is_a_protocol_error(fake, body):
    fake.set("GET", "/queue", httpx.Response(200, content=body))
    with pytest.raises(ProtocolError, match="not JSON"):
        await fake.session(retries=0).get_json("/queue")


# -- the job: submit, watch, history, queue, cancel -----------------------------------------


async def test_submit_reads_a_good_answer(fake, prompt_id):
    number = await submit(fake.session(), GRAPH, prompt_id, JobSettings(client_id="c"))
    assert number == 7


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        (text("<html>hi</html>"), "something that is not JSON"),
        (js(["prompt_id", 7]), "a list where an object was expected"),
        (js("ok"), "a string where an object was expected"),
    ],
)
async def test_submit_garbage_answer_is_a_protocol_error(fake, prompt_id, answer, what):
    fake.set("POST", "/prompt", answer)
    with pytest.raises(ProtocolError, match=f"POST /prompt from {SERVER} answered {what}"):
        await submit(fake.session(), GRAPH, prompt_id, JobSettings(client_id="c"))
    assert fake.count("POST", "/prompt") == 1  # a POST is never repeated blindly


async def test_submit_answer_with_odd_number_is_accepted(fake, prompt_id):
    fake.set("POST", "/prompt", js({"prompt_id": prompt_id, "number": "x"}))
    assert await submit(fake.session(), GRAPH, prompt_id, JobSettings(client_id="c")) is None


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


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
async def test_malformed_history_entry_in_probe_and_wait(fake, prompt_id, case):
    change, what = BAD_ENTRIES[case]
    answer = history_for(prompt_id)
    change(answer[prompt_id])
    fake.set("GET", f"/history/{prompt_id}", js(answer))
    watch = _Watch(fake.session(retries=0), prompt_id, GRAPH)
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
        await _Watch(fake.session(retries=0), prompt_id, GRAPH).probe()


BAD_QUEUES = {
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
    calls = [cancel(session, prompt_id), _Watch(session, prompt_id, GRAPH).probe()]
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


async def test_cancel_reads_a_good_queue(fake, prompt_id):
    fake.set("GET", "/queue", js({"queue_running": [], "queue_pending": [[3, prompt_id, {}]]}))
    assert await cancel(fake.session(), prompt_id) == "dequeued"
    assert fake.count("POST", "/queue") == 1


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


def test_websocket_garbage_gives_no_events():
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


# -- a whole job through the fake server ------------------------------------------------------


class NoSocket:
    """The websocket is unavailable: the job is followed by polling."""

    async def ensure(self) -> bool:
        return False

    def unsubscribe(self, prompt_id: str) -> None:
        pass


async def _run(session: HttpSession, prompt_id: str, **settings) -> list:
    settings = JobSettings(client_id="c", **settings)
    return [
        ev async for ev in run_job(session, NoSocket(), GRAPH, {}, settings, prompt_id=prompt_id)
    ]


async def test_whole_job_with_recorded_answers(fake, prompt_id):
    events = await _run(fake.session(), prompt_id)
    assert isinstance(events[-1], Succeeded)
    (image,) = events[-1].generation.images
    assert image.data == GOOD_PNG and image.filename == "t_00001_.png"
    assert fake.count("GET", "/view") == 1


async def test_garbled_history_for_ever_fails_the_job_with_the_route(fake, prompt_id):
    fake.set("GET", f"/history/{prompt_id}", text("<html>maintenance</html>"))
    with pytest.raises(ProtocolError, match=f"GET /history/{prompt_id} from {SERVER} answered"):
        await _run(fake.session(retries=1), prompt_id)
    assert fake.count("GET", "/queue") >= 2  # the job was looked up to be cancelled


@pytest.mark.parametrize(("cancel_on_exit", "interrupts"), [(True, 1), (False, 0)])
async def test_leaving_a_running_job_cancels_it_unless_told_not_to(
    fake, prompt_id, cancel_on_exit, interrupts
):
    fake.set("GET", "/queue", js({"queue_running": [[1, prompt_id, {}]], "queue_pending": []}))
    fake.set("GET", f"/history/{prompt_id}", js({}))
    settings = JobSettings(client_id="c", cancel_on_exit=cancel_on_exit)
    job = run_job(fake.session(), NoSocket(), GRAPH, {}, settings, prompt_id=prompt_id)
    async for event in job:
        if isinstance(event, Started):
            break
    await job.aclose()
    assert fake.count("POST", "/interrupt") == interrupts


# -- /view: damaged bodies are fetched again, then fail ---------------------------------------


async def _fetch(fake: FakeComfy, prompt_id: str, *, retries: int = 3, **kw):
    entry = _entry(prompt_id)
    return await fetch_images(
        fake.session(retries=retries), entry, [], TYPES, prompt_id=prompt_id, **kw
    )


async def test_truncated_png_is_fetched_again(fake, prompt_id):
    fake.set(
        "GET", "/view", httpx.Response(200, content=HALF_PNG), httpx.Response(200, content=GOOD_PNG)
    )
    (image,) = await _fetch(fake, prompt_id)
    assert image.data == GOOD_PNG
    assert fake.count("GET", "/view") == 2


async def test_always_truncated_png_fails_with_corrupt_output(fake, prompt_id):
    fake.set("GET", "/view", httpx.Response(200, content=HALF_PNG))
    with pytest.raises(CorruptOutput) as info:
        await _fetch(fake, prompt_id, retries=2)
    err = info.value
    assert (err.node_id, err.filename, err.prompt_id, err.server) == (
        "2",
        "t_00001_.png",
        prompt_id,
        SERVER,
    )
    assert "is cut short" in err.reason and "fetched 3 times" in err.reason
    assert str(err).startswith(f"output t_00001_.png from node 2 of job {prompt_id} is unusable")
    assert fake.count("GET", "/view") == 3


async def test_body_shorter_than_content_length_is_fetched_again(fake, prompt_id):
    short = httpx.Response(
        200, content=GOOD_PNG, headers={"content-length": str(len(GOOD_PNG) + 10)}
    )
    fake.set("GET", "/view", short)
    with pytest.raises(CorruptOutput, match=r"bytes arrived but Content-Length said"):
        await _fetch(fake, prompt_id, retries=1)
    assert fake.count("GET", "/view") == 2


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"<html><body>Bad Gateway</body></html>", "the body is not an image"),
        (b"", "the body is empty"),
        (GOOD_PNG[:-20], "is cut short"),
    ],
)
async def test_non_image_bodies_are_corrupt(fake, prompt_id, body, what):
    fake.set("GET", "/view", httpx.Response(200, content=body))
    with pytest.raises(CorruptOutput, match=what):
        await _fetch(fake, prompt_id, retries=0)


async def test_transient_view_error_then_good(fake, prompt_id):
    fake.set("GET", "/view", httpx.Response(503), httpx.Response(200, content=GOOD_PNG))
    (image,) = await _fetch(fake, prompt_id)
    assert image.data == GOOD_PNG


async def test_non_image_outputs_are_not_decoded(fake, prompt_id):
    entry = _entry(prompt_id)
    entry["outputs"]["2"]["images"][0]["filename"] = "clip_00001_.mp4"
    fake.set("GET", "/view", httpx.Response(200, content=b"\x00\x00\x00\x18ftypmp42"))
    (video,) = await fetch_images(fake.session(), entry, [], TYPES, prompt_id=prompt_id)
    assert video.data.endswith(b"mp42")


async def test_expected_size_mismatch_names_both_sizes(fake, prompt_id):
    with pytest.raises(CorruptOutput) as info:
        await _fetch(fake, prompt_id, expect_size=(1024, 768))
    err = info.value
    assert (err.expected_size, err.actual_size) == ((1024, 768), (64, 64))
    assert "it is 64x64 but 1024x768 was expected" in str(err)
    assert fake.count("GET", "/view") == 1  # a decoded image of the wrong size is not re-fetched
    (image,) = await _fetch(fake, prompt_id, expect_size=(64, 64))
    assert image.size == (64, 64)


async def test_expected_size_through_a_whole_job(fake, prompt_id):
    with pytest.raises(CorruptOutput, match="64x64 but 128x128"):
        await _run(fake.session(), prompt_id, expect_size=(128, 128))
    events = await _run(FakeComfy(prompt_id).session(), prompt_id, expect_size=(64, 64))
    assert isinstance(events[-1], Succeeded)


async def test_damaged_websocket_frame_is_corrupt(fake, prompt_id):
    entry = {"outputs": {}, "status": {"messages": []}}
    types = {"5": "SaveImageWebsocket"}
    good = BinaryFrame(1, GOOD_PNG, "image/png", "5", prompt_id)
    (image,) = await fetch_images(
        fake.session(), entry, [good], types, prompt_id=prompt_id, expect_size=(64, 64)
    )
    assert image.type == "websocket"
    bad = BinaryFrame(1, HALF_PNG, "image/png", "5", prompt_id)
    with pytest.raises(CorruptOutput, match="the websocket frame is cut short"):
        await fetch_images(fake.session(), entry, [bad], types, prompt_id=prompt_id)


# -- retries: short waits, and nothing printed ------------------------------------------------


async def test_three_retries_take_well_under_a_second(fake):
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


def test_retries_print_nothing_with_logging_unconfigured():
    script = textwrap.dedent(
        """
        import asyncio, io, httpx
        from PIL import Image
        from comfyfn.client._http import HttpSession
        from comfyfn.client._outputs import fetch_images

        buf = io.BytesIO(); Image.new("RGB", (8, 8)).save(buf, format="PNG")
        good = buf.getvalue()
        R = httpx.Response
        answers = {"/queue": [R(503), R(502), R(200, json={})],
                   "/view": [R(200, content=good[:30]), R(200, content=good)]}

        def handler(request):
            queue = answers[request.url.path]
            r = queue.pop(0)
            return httpx.Response(r.status_code, content=r.content)

        async def main():
            mock = httpx.MockTransport(handler)
            s = HttpSession("http://comfy.test", httpx.Timeout(5), transport=mock)
            print(await s.get_json("/queue"))
            entry = {"outputs": {"2": {"images": [{"filename": "a.png"}]}}}
            images = await fetch_images(s, entry, [], {"2": "SaveImage"}, prompt_id="p")
            print(len(images[0].data) == len(good))
            await s.aclose()

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{}\nTrue\n"
    assert done.stderr == ""


async def test_every_error_is_a_comfy_error(fake, prompt_id):
    """A catch-all: whatever garbage the routes give, only ComfyErrors come out."""
    garbage = [text("nope"), js([]), js({}), js({"x": 1}), js(None)]
    for answer in garbage:
        fake = FakeComfy(prompt_id)
        fake.set("GET", f"/history/{prompt_id}", answer)
        fake.set("GET", "/queue", answer)
        with pytest.raises(ComfyError):
            await asyncio.wait_for(_run(fake.session(retries=0), prompt_id, timeout=2.0), 10)

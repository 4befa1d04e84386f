"""A fake ComfyUI over ``httpx.MockTransport`` that answers with the responses recorded from
a real ComfyUI 0.3.75 (tests/fixtures/comfyui/), and what the client tests build on it: the
server's URL, a two-node graph and its job spec, recorded samples and history entries.

:class:`FakeComfy` keeps a queue and a history the way ComfyUI does; any route can be
overridden with hand-made garbage (tests/unit/test_client_protocol.py says why)."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image as PIL

from comfyfn.client._http import HttpSession
from comfyfn.client._job import JobSettings, JobSpec

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


def load_sample(name: str) -> Any:
    """A response recorded from a real ComfyUI 0.3.75."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def png(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    PIL.effect_noise(size, 40).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


GOOD_PNG = png()
HALF_PNG = GOOD_PNG[: len(GOOD_PNG) // 2]


def history_for(prompt_id: str, name: str = "history_ok.json", graph: dict | None = None) -> dict:
    """A recorded history answer, re-keyed to ``prompt_id`` (and ``graph``, if given)."""
    (entry,) = load_sample(name).values()
    entry = copy.deepcopy(entry)
    entry["prompt"][1] = prompt_id
    if graph is not None:
        entry["prompt"][2] = graph
    for _kind, data in entry["status"]["messages"]:
        data["prompt_id"] = prompt_id
    return {prompt_id: entry}


def js(value: object) -> httpx.Response:
    body = json.dumps(value).encode()  # json=None would send an empty body, not null
    return httpx.Response(200, content=body, headers={"content-type": "application/json"})


class FakeComfy:
    """A ComfyUI with a queue and a history, answering as the recorded server did.

    ``POST /prompt`` queues a job under the client's prompt id. Each ``GET /history/<id>``
    of a job moves it one step on — pending, then running, then (``steps`` polls after it
    was posted) finished, its history entry the recorded ``finish_with`` — unless ``hold``
    (``"pending"`` or ``"running"``) keeps it there. ``POST /queue {"delete"}`` and
    ``POST /interrupt`` act as ComfyUI's do (a deleted job never reaches the history; an
    interrupted one gets the recorded interrupted entry). A ``prompt_id`` given at
    construction is a job that has already finished. ``set(method, path, *answers)``
    overrides a route: answers are served in order, the last one repeating; a callable
    answer is called with the request.
    """

    def __init__(
        self,
        prompt_id: str | None = None,
        *,
        finish_with: str = "history_ok.json",
        steps: int = 2,
        hold: str | None = None,
        object_info: dict | None = None,
    ) -> None:
        self.finish_with, self.steps, self.hold = finish_with, steps, hold
        self.object_info = object_info or {}
        self.calls: list[tuple[str, str]] = []
        self.posts: list[tuple[str, Any]] = []  #: (path, JSON body) of every POST
        self.graphs: dict[str, dict] = {}
        self.progress: dict[str, int] = {}  #: polls of each job not yet finished
        self.pending: list[str] = []
        self.running: list[str] = []
        self.history: dict[str, dict] = {}
        self.number = 0
        self.overrides: dict[tuple[str, str], list[Answer]] = {}
        self.view = httpx.Response(200, content=GOOD_PNG)
        if prompt_id is not None:
            self.history.update(history_for(prompt_id, finish_with, GRAPH))

    # -- what a test sets and reads --------------------------------------------------------

    def set(self, method: str, path: str, *answers: Answer) -> None:
        self.overrides[(method, path)] = list(answers)

    def count(self, method: str, path: str) -> int:
        return self.calls.count((method, path))

    def posted(self, path: str) -> list[Any]:
        return [body for p, body in self.posts if p == path]

    def session(self, retries: int = 3) -> HttpSession:
        return HttpSession(
            SERVER, httpx.Timeout(5.0), retries=retries, transport=httpx.MockTransport(self)
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def queue_job(self, prompt_id: str, graph: dict, *, running: bool = False) -> None:
        """A job someone else submitted."""
        self.graphs[prompt_id] = graph
        self.progress[prompt_id] = 1 if running else 0
        (self.running if running else self.pending).append(prompt_id)

    def finish(self, prompt_id: str, name: str | None = None) -> None:
        for line in (self.pending, self.running):
            if prompt_id in line:
                line.remove(prompt_id)
        graph = self.graphs.get(prompt_id, GRAPH)
        self.history.update(history_for(prompt_id, name or self.finish_with, graph))

    # -- the server ------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.path)
        self.calls.append(key)
        if request.method == "POST":
            body = json.loads(request.content) if request.content.startswith(b"{") else None
            self.posts.append((request.url.path, body))
        answers = self.overrides.get(key)
        if answers:
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            response = answer(request) if callable(answer) else answer
        else:
            response = self.answer(request)
        # MockTransport may hand the same Response object out twice: copy its parts.
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )

    def answer(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        if method == "POST" and path == "/prompt":
            return self.post_prompt(json.loads(request.content))
        if method == "GET" and path == "/queue":
            return js(self.queue_answer())
        if method == "GET" and path.startswith("/history/"):
            prompt_id = path.removeprefix("/history/")
            self.step(prompt_id)
            entry = self.history.get(prompt_id)
            return js({prompt_id: entry} if entry else {})
        if method == "GET" and path == "/history":
            return js(self.history)
        if method == "GET" and path == "/view":
            return self.view
        if method == "GET" and path == "/object_info":
            return js(self.object_info)
        if method == "POST" and path == "/queue":
            return self.delete(json.loads(request.content))
        if method == "POST" and path == "/interrupt":
            return self.interrupt(json.loads(request.content))
        if method == "POST":  # 0.3.75 serves its front end at "/": other POSTs are a 405
            return httpx.Response(405, text="405: Method Not Allowed")
        return httpx.Response(404, text="404: Not Found")

    def post_prompt(self, body: dict) -> httpx.Response:
        prompt_id = body["prompt_id"]
        self.queue_job(prompt_id, body["prompt"])
        self.number += 1
        return js({"prompt_id": prompt_id, "number": self.number, "node_errors": {}})

    def queue_answer(self) -> dict:
        def item(prompt_id: str) -> list:
            return [self.number, prompt_id, self.graphs.get(prompt_id, {}), {}, ["2"]]

        return {
            "queue_running": [item(p) for p in self.running],
            "queue_pending": [item(p) for p in self.pending],
        }

    def step(self, prompt_id: str) -> None:
        """One poll of a job: it moves on unless held."""
        if prompt_id not in self.pending + self.running:  # finished, deleted or unknown
            return
        if prompt_id in self.pending:
            if self.hold == "pending":
                return
            self.pending.remove(prompt_id)
            self.running.append(prompt_id)
        if self.hold == "running":
            return
        self.progress[prompt_id] += 1
        if self.progress[prompt_id] >= self.steps:
            self.finish(prompt_id)

    def delete(self, body: dict) -> httpx.Response:
        if body.get("clear"):
            self.pending.clear()
        for prompt_id in body.get("delete", ()):
            if prompt_id in self.pending:
                self.pending.remove(prompt_id)
        return httpx.Response(200)

    def interrupt(self, body: dict) -> httpx.Response:
        wanted = body.get("prompt_id")
        for prompt_id in list(self.running):
            if wanted in (None, prompt_id):
                self.finish(prompt_id, "history_interrupted.json")
        return httpx.Response(200)


def spec(prompt_id: str, **settings) -> JobSpec:
    return JobSpec(prompt_id, GRAPH, {}, JobSettings(client_id="c", **settings))

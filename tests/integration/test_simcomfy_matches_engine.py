"""The simulated ComfyUI (tests/support/simcomfy.py) against the real engine: the same jobs through
comfyfn's own AsyncClient on both, compared after ids and timings are normalised away —
comfyfn's events, the raw websocket messages in order, and the shape of every answer.
Any difference fails with a readable diff."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import httpx
import pytest

from comfyfn import AsyncClient, WorkflowInvalid
from comfyfn.client._socket import EventSocket
from comfyfn.events import Progress
from tests.support.graphs import sleep_graph
from tests.support.simcomfy import Settings, simulated_servers

pytestmark = [  # the simulator imitates the managed engine's ComfyUI (0.3.75)
    pytest.mark.engine,
    pytest.mark.anyio,
    pytest.mark.one_version,
]


class RecordingSocket(EventSocket):
    """The client's own socket, keeping every message it receives (binary: its event)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[dict[str, Any]] = []

    def _route_json(self, raw: str) -> None:
        self.seen.append(json.loads(raw))
        super()._route_json(raw)

    def _route_frame(self, raw: bytes) -> None:
        self.seen.append({"type": f"binary:{int.from_bytes(raw[:4], 'big')}", "data": {}})
        super()._route_frame(raw)


class Recorder(AsyncClient):
    _socket_class = RecordingSocket

    async def __aenter__(self) -> Recorder:  # typed as a Recorder, not an AsyncClient
        await super().__aenter__()
        return self

    @property
    def messages(self) -> list[dict[str, Any]]:
        assert isinstance(self._socket, RecordingSocket)
        return self._socket.seen


def shape(value: Any) -> Any:
    """``value`` with every string, number and boolean replaced by its type's name."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shape(v) for v in value]
    return "null" if value is None else type(value).__name__.replace("int", "float")


def job_messages(client: Recorder, prompt_id: str) -> list[str]:
    """The job's messages (type, node, and the data's shape), from the first after the
    previous job's end to its ``executing`` with node null."""
    out: list[str] = []
    for message in client.messages:
        data = message.get("data") or {}
        if "sid" in data or message["type"] == "feature_flags":
            continue
        if data.get("prompt_id") not in (None, prompt_id):
            out = []  # another job's: start after it
            continue
        node = data.get("node", data.get("node_id", ""))
        out.append(f"{message['type']} {node} {json.dumps(shape(data), sort_keys=True)}")
        if message["type"] == "executing" and data.get("node") is None:
            break
    return out


def collapse_steps(lines: list[str]) -> list[str]:
    """Runs of progress messages collapsed to one pair (their count depends on timing), and
    no status (where another job's submission falls in them depends on timing too)."""
    text = "\n".join(line for line in lines if not line.startswith("status "))
    pair = r"(progress_state [^\n]*\nprogress [^\n]*\n)"
    return re.sub(pair + r"\1+", r"\1", text + "\n").splitlines()


def same(name: str, real: Any, simulated: Any) -> None:
    if real != simulated:
        a = json.dumps(real, indent=1, sort_keys=True).splitlines()
        b = json.dumps(simulated, indent=1, sort_keys=True).splitlines()
        diff = "\n".join(difflib.unified_diff(a, b, "engine", "simcomfy", lineterm=""))
        pytest.fail(f"{name} differs:\n{diff}", pytrace=False)


async def both(server: str, scenario: Any) -> tuple[Any, Any]:
    """``scenario(url)`` on the engine, then on a simulated server."""
    real = await scenario(server)
    async with simulated_servers(1, Settings(job_ms=300, load_ms=50)) as cluster:
        simulated = await scenario(cluster.urls[0])
    return real, simulated


async def run_job(client: Recorder, graph: dict[str, Any]) -> dict[str, Any]:
    job = await client.submit_graph(graph)
    events = [type(e).__name__ async for e in job.events()]
    history = await client.history(job.prompt_id)
    return {
        "events": events,
        "messages": job_messages(client, job.prompt_id),
        "history": shape(history[job.prompt_id]),
    }


async def test_a_job_looks_the_same(server, unique):
    async def scenario(url: str) -> dict[str, Any]:
        async with Recorder(url) as client, httpx.AsyncClient(base_url=url) as http:
            posted = await http.post("/prompt", json={"prompt": sleep_graph(unique())})
            await (await client.attach(posted.json()["prompt_id"])).result()
            done = await run_job(client, sleep_graph(unique(), milliseconds=200, steps=3))
            queue = await client.queue()
            await (await client.submit_graph(sleep_graph(unique()))).result()
        return {**done, "post": [posted.status_code, shape(posted.json())], "queue": queue}

    real, simulated = await both(server, scenario)
    for key in real:
        same(key, real[key], simulated[key])


async def test_the_z_image_graph_looks_the_same(server, unique):
    async def scenario(url: str) -> dict[str, Any]:
        async with Recorder(url) as client:
            await client.generate("a red apple", seed=unique(), size=(64, 64), steps=2)
            job = await client.submit("a red apple", seed=unique(), size=(64, 64), steps=2)
            events = [type(e).__name__ async for e in job.events()]
            history = await client.history(job.prompt_id)
            messages = job_messages(client, job.prompt_id)
        return {"events": events, "messages": messages, "history": shape(history[job.prompt_id])}

    real, simulated = await both(server, scenario)
    for key in real:
        same(key, real[key], simulated[key])


async def test_an_interrupt_and_a_queue_delete_look_the_same(server, unique):
    async def scenario(url: str) -> dict[str, Any]:
        async with Recorder(url) as client:
            running = await client.submit_graph(sleep_graph(unique(), milliseconds=3000, steps=30))
            waiting = await client.submit_graph(sleep_graph(unique()))
            events, queue = [], {}
            async for event in running.events():
                events.append(type(event).__name__)
                if isinstance(event, Progress) and event.value == 1:
                    # one running, one waiting: on both, whatever the engine's start-up took
                    queue = shape(await client.queue())
                    await client.delete_from_queue(waiting.prompt_id)
                    await client.interrupt(running.prompt_id)
            deleted = [type(e).__name__ async for e in waiting.events()]
            history = await client.history(running.prompt_id)
            messages = collapse_steps(job_messages(client, running.prompt_id))
        return {
            "events": events,
            "deleted": deleted,
            "queue": queue,
            "messages": messages,
            "history": shape(history[running.prompt_id]),
        }

    real, simulated = await both(server, scenario)
    for key in real:
        same(key, real[key], simulated[key])


async def test_refusals_and_definitions_look_the_same(server):
    bad = {"1": {"class_type": "NoSuchNode", "inputs": {}}}

    async def scenario(url: str) -> dict[str, Any]:
        async with AsyncClient(url) as client, httpx.AsyncClient(base_url=url) as http:
            with pytest.raises(WorkflowInvalid) as refused:
                await client.submit_graph(bad, validate=False)
            answers = {
                path: (await http.get(path, timeout=30)).json()
                for path in (
                    "/object_info/EmptyImage",
                    "/object_info/ComfyfnSleep",
                    "/object_info/UNETLoader",
                    "/object_info/NoSuchNode",
                    "/features",
                    "/prompt",
                    "/history/no-such-id",
                )
            }
            stats = await client.system_stats()
            stats["system"]["argv"] = stats["system"]["argv"][:1]  # the command line's length
            stats = shape(stats)
        return {"refusal": refused.value.raw, "answers": answers, "stats": stats}

    real, simulated = await both(server, scenario)
    for key in real:
        same(key, real[key], simulated[key])

"""Simulated ComfyUI servers for scale tests and benches: many on loopback, in one process.

Each server speaks ComfyUI 0.3.75's HTTP and websocket protocol (its routes, answers, and
message order; aiohttp, as ComfyUI itself) closely enough that comfyfn's client cannot tell
it from a real one for text-to-image graphs; instead of computing, a job sleeps. One job runs
at a time per server (a FIFO queue, ordered by ``number`` as ComfyUI's is). Time is charged:

- ``load_ms`` once when a job's model set (the loader nodes' file names) differs from the
  last one loaded on that server (``ComfyfnLoadModel`` charges its own ``load_milliseconds``);
- per sampler (a node with an integer ``steps`` input): ``steps × step_ms`` if ``step_ms`` is
  set, else ``job_ms`` (``ComfyfnSleep``: its ``milliseconds``), in ``steps`` parts with a
  ``progress`` message each; a graph with no sampler charges ``job_ms`` on its first output.

In-process (tests)::

    async with simulated_servers(64, Settings(job_ms=10)) as cluster:
        cluster.urls                      # ["http://127.0.0.1:40123", ...]
        cluster.servers[0].counters       # requests per route, executions per prompt, loads

As a process (benches): ``python tests/support/simcomfy.py --ports 64 --base-port 0 --job-ms 200``
prints one JSON line ``{"urls": [...], "pid": ...}`` once every server listens, and serves
until SIGTERM/SIGINT. ``GET /simcomfy/counters`` (not a ComfyUI route) answers a server's
counters and the process's CPU seconds; ``POST /simcomfy/hold`` stops it starting queued jobs
(the running one finishes; with ``{"after": n}``, once it has started ``n`` more; with
``{"running": true}`` the running one stops too, between two nodes) and ``POST
/simcomfy/release`` lets it go on: a test's way to keep jobs in flight for as long as it needs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.simcomfy_graph import (
    DEFAULT_MODELS,
    DEFAULT_OBJECT_INFO,
    invalid_prompt,
    node_definitions,
    outputs_of,
    png,
)
from tests.support.simcomfy_job import Job
from tests.support.simcomfy_routes import Routes

__all__ = ["Counters", "Settings", "SimCluster", "SimServer", "simulated_servers"]

MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


@dataclass(frozen=True)
class Settings:
    """How one simulated server behaves (times in milliseconds)."""

    job_ms: float = 200.0
    step_ms: float | None = None  #: per sampler step; overrides job_ms when set
    load_ms: float = 1000.0
    models: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    #: files listed (so graphs naming them validate) whose loading fails with execution_error
    broken_models: frozenset[str] = frozenset()
    object_info: Path = DEFAULT_OBJECT_INFO


@dataclass
class Counters:
    """What one server has done, for tests to assert on."""

    requests: Counter[str] = field(default_factory=Counter)  #: "GET /queue" → count
    executions: Counter[str] = field(default_factory=Counter)  #: prompt id → times run
    loads: int = 0  #: model-set changes paid for
    finished: Counter[str] = field(default_factory=Counter)  #: success / error / interrupted

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "executions": dict(self.executions),
            "loads": self.loads,
            "finished": dict(self.finished),
        }


_INFO_CACHE: dict[tuple[Path, str], tuple[dict[str, Any], bytes]] = {}


def _definitions(settings: Settings) -> tuple[dict[str, Any], bytes]:
    """Node definitions and their encoded ``/object_info`` body, shared by equal settings."""
    models = {k: sorted(v) for k, v in settings.models.items()}
    for name in settings.broken_models:
        for folder in models.values():
            if name not in folder:
                folder.append(name)
    key = (settings.object_info, json.dumps(models, sort_keys=True))
    if key not in _INFO_CACHE:
        info = node_definitions(settings.object_info, models)
        _INFO_CACHE[key] = info, json.dumps(info).encode()
    return _INFO_CACHE[key]


class SimServer:
    """One simulated ComfyUI: its queue, history, websockets and worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.info, self.info_body = _definitions(settings)
        self.counters = Counters()
        self.url = ""
        self.number = 0
        self.queue: list[tuple[Any, ...]] = []  #: a heap, as ComfyUI's
        self.running: tuple[Any, ...] | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.socket_flags: dict[str, dict[str, Any]] = {}
        self.client_id: str | None = None  #: the running job's client
        self.last_node_id: str | None = None
        self.interrupted = False
        self.loaded: frozenset[str] = frozenset()  #: the model set on the "GPU"
        self.cache: set[str] = set()  #: node signatures the output cache holds
        self.cached_ui: dict[str, Any] = {}  #: cached output nodes' outputs, by signature
        self.files: dict[tuple[str, str, str], tuple[int, int]] = {}  #: (type, sub, name)
        self.prefix_counters: Counter[str] = Counter()
        self._outbox: asyncio.Queue[tuple[str | int, Any, str | None]] = asyncio.Queue()
        self._wake = asyncio.Event()
        #: cleared by ``POST /simcomfy/hold``: no queued job starts until it is set again
        #: (``/simcomfy/release``); the one running finishes
        self.starting = asyncio.Event()
        self.starting.set()
        self.start_budget: int | None = None  #: jobs it starts before it holds (None: any)
        #: cleared by ``POST /simcomfy/hold {"running": true}``: the running job stops
        #: between two nodes until ``/simcomfy/release``
        self.advancing = asyncio.Event()
        self.advancing.set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name="simcomfy-worker"),
            asyncio.create_task(self._publish(), name="simcomfy-publisher"),
        ]

    async def stop(self) -> None:
        """Stop working and close every websocket (as a server that dies would)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close()

    # -- messages ---------------------------------------------------------------------

    def emit(self, event: str | int, data: Any, sid: str | None = None) -> None:
        """Send to ``sid`` (everyone if None), in order, as ComfyUI's ``send_sync`` does."""
        self._outbox.put_nowait((event, data, sid))

    async def _publish(self) -> None:
        while True:
            event, data, sid = await self._outbox.get()
            await self.send(event, data, sid)

    async def send(self, event: str | int, data: Any, sid: str | None) -> None:
        targets = list(self.sockets.values()) if sid is None else [self.sockets.get(sid)]
        if isinstance(event, int):
            payload: bytes | str = event.to_bytes(4, "big") + data
        else:
            payload = json.dumps({"type": event, "data": data})
        for ws in targets:
            if ws is None or ws.closed:
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                if isinstance(payload, bytes):
                    await ws.send_bytes(payload)
                else:
                    await ws.send_str(payload)

    def queue_info(self) -> dict[str, Any]:
        remaining = len(self.queue) + (self.running is not None)
        return {"exec_info": {"queue_remaining": remaining}}

    def queue_updated(self) -> None:
        self.emit("status", {"status": self.queue_info()})

    def supports_metadata(self, sid: str | None) -> bool:
        flags = self.socket_flags.get(sid or "", {}).get("feature_flags", {})
        return flags.get("supports_preview_metadata") is True

    # -- the queue --------------------------------------------------------------------

    def put(self, item: tuple[Any, ...]) -> None:
        heapq.heappush(self.queue, item)
        self.queue_updated()
        self._wake.set()

    def wipe_queue(self) -> None:
        self.queue = []
        self.queue_updated()

    def delete(self, prompt_id: str) -> None:
        for index, item in enumerate(self.queue):
            if item[1] == prompt_id:
                if len(self.queue) == 1:
                    self.wipe_queue()
                else:
                    self.queue.pop(index)
                    heapq.heapify(self.queue)
                self.queue_updated()
                return

    async def _work(self) -> None:
        while True:
            while not self.starting.is_set():  # (a hold sent after a release counts)
                await self.starting.wait()
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.start_budget is not None:
                if self.start_budget == 0:
                    self.starting.clear()
                    continue
                self.start_budget -= 1
            self.running = heapq.heappop(self.queue)
            self.queue_updated()
            await self._run(self.running)

    async def _run(self, item: tuple[Any, ...]) -> None:
        _number, prompt_id, prompt, extra_data, outputs = item
        self.counters.executions[prompt_id] += 1
        job = Job(self, prompt_id, prompt, outputs, extra_data.get("client_id"))
        result = await job.execute()
        self.counters.finished[job.outcome] += 1
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        self.history[prompt_id] = {"prompt": list(item), "outputs": {}, "status": job.status()}
        self.history[prompt_id].update(result)
        self.running = None
        self.queue_updated()
        if self.client_id is not None:
            self.emit("executing", {"node": None, "prompt_id": prompt_id}, self.client_id)

    # -- answers ----------------------------------------------------------------------

    def accept(self, body: Mapping[str, Any]) -> web.Response:
        """``POST /prompt``, as ComfyUI 0.3.75 answers it."""
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = -self.number if body.get("front") else self.number
            self.number += 1
        if "prompt" not in body:
            error: dict[str, object] = {"type": "no_prompt", "message": "No prompt provided"}
            error |= {"details": "No prompt provided", "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        if (refusal := invalid_prompt(prompt, self.info)) is not None:
            return web.json_response(refusal, status=400)
        extra_data = dict(body.get("extra_data", {}))
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra_data.pop(key, None)
        extra_data["create_time"] = int(time.time() * 1000)
        self.put((number, prompt_id, prompt, extra_data, outputs_of(prompt, self.info)))
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    def interrupt(self, prompt_id: str | None) -> None:
        if not prompt_id or (self.running is not None and self.running[1] == prompt_id):
            self.interrupted = True

    def get_history(self, max_items: int | None, offset: int) -> dict[str, Any]:
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out = {}
        for index, (key, entry) in enumerate(self.history.items()):
            if index >= offset:
                out[key] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return out

    def view(self, query: Mapping[str, str]) -> web.Response:
        name = query.get("filename", "")
        if not name or name[0] == "/" or ".." in name:
            return web.Response(status=400)
        kind = query.get("type", "output")
        if kind not in ("output", "input", "temp"):
            return web.Response(status=400)
        subfolder = query.get("subfolder", "")
        if ".." in subfolder.split("/") or subfolder.startswith("/"):
            return web.Response(status=403)
        size = self.files.get((kind, subfolder.strip("/"), os.path.basename(name)))
        if size is None:
            return web.Response(status=404)
        headers = {"Content-Disposition": f'filename="{os.path.basename(name)}"'}
        return web.Response(body=png(*size), content_type="image/png", headers=headers)


class SimCluster:
    """Simulated servers on loopback ports, all in this process and event loop."""

    def __init__(self, settings: Sequence[Settings], host: str, base_port: int) -> None:
        self.settings = settings
        self.host = host
        self.base_port = base_port
        self.servers: list[SimServer] = []
        self._routes = Routes()
        self._runner = web.AppRunner(self._routes.app, access_log=None, shutdown_timeout=1.0)
        self._sites: list[web.SockSite] = []

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    async def start(self) -> None:
        await self._runner.setup()
        for index, settings in enumerate(self.settings):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.base_port + index if self.base_port else 0))
            port = sock.getsockname()[1]
            server = SimServer(settings)
            server.url = f"http://{self.host}:{port}"
            server.start()
            self._routes.by_port[port] = server
            self.servers.append(server)
            site = web.SockSite(self._runner, sock)
            await site.start()
            self._sites.append(site)

    async def stop_server(self, index: int) -> None:
        """Take one server down: it stops listening, drops its connections and its jobs."""
        server = self.servers[index]
        port = int(server.url.rsplit(":", 1)[1])
        self._routes.by_port.pop(port, None)
        await self._sites[index].stop()
        await server.stop()

    async def close(self) -> None:
        for server in self.servers:
            await server.stop()
        await self._runner.cleanup()


@contextlib.asynccontextmanager
async def simulated_servers(
    count: int = 1,
    settings: Settings | Sequence[Settings] | None = None,
    *,
    host: str = "127.0.0.1",
    base_port: int = 0,
) -> AsyncIterator[SimCluster]:
    """Start ``count`` simulated ComfyUI servers (one ``settings`` for all, or one each)."""
    each = [settings or Settings()] * count if not isinstance(settings, Sequence) else settings
    cluster = SimCluster(list(each), host, base_port)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--ports", type=int, default=1, help="how many servers")
    parser.add_argument("--base-port", type=int, default=0, help="first port (0: any free)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--job-ms", type=float, default=200.0)
    parser.add_argument("--step-ms", type=float, default=None)
    parser.add_argument("--load-ms", type=float, default=1000.0)
    parser.add_argument("--object-info", type=Path, default=DEFAULT_OBJECT_INFO)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    settings = Settings(
        job_ms=args.job_ms, step_ms=args.step_ms, load_ms=args.load_ms, object_info=args.object_info
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with simulated_servers(
        args.ports, settings, host=args.host, base_port=args.base_port
    ) as c:
        sys.stdout.write(json.dumps({"urls": c.urls, "pid": os.getpid()}) + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    random.seed()
    asyncio.run(_serve(_arguments(argv)))


if __name__ == "__main__":
    main()

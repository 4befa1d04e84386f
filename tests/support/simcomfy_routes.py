"""The HTTP and websocket routes of simulated ComfyUI servers (tests/support/simcomfy.py): what
ComfyUI 0.3.75's ``server.py`` answers, for the routes comfyfn uses."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from tests.support.simcomfy import SimServer

__all__ = ["FEATURES", "Routes"]

FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
_GIB = 24 * 2**30
SYSTEM_STATS = {
    "system": {
        "os": "posix",
        "ram_total": _GIB,
        "ram_free": _GIB,
        "comfyui_version": "0.3.75",
        "required_frontend_version": "1.32.9",
        "installed_templates_version": None,
        "required_templates_version": "0.7.25",
        "python_version": sys.version,
        "pytorch_version": "2.13.0+cpu",
        "embedded_python": False,
        "argv": ["main.py", "--simulated"],
    },
    "devices": [
        {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": _GIB,
            "vram_free": _GIB,
            "torch_vram_total": _GIB,
            "torch_vram_free": _GIB,
        }
    ],
}


class Routes:
    """The HTTP and websocket routes of every server in one aiohttp application; each request
    goes to the server whose port it arrived on."""

    def __init__(self) -> None:
        self.by_port: dict[int, SimServer] = {}
        self.app = web.Application(client_max_size=100 * 2**20)
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", "/ws", self.websocket),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_entry),
            ("POST", "/history", self.post_history),
            ("GET", "/view", self.get_view),
            ("GET", "/object_info", self.get_object_info),
            ("GET", "/object_info/{node_class}", self.get_node_info),
            ("GET", "/system_stats", self.fixed(SYSTEM_STATS)),
            ("GET", "/features", self.fixed(FEATURES)),
            ("GET", "/models", self.get_models),
            ("GET", "/models/{folder}", self.get_models),
            ("GET", "/embeddings", self.fixed([])),
            ("POST", "/free", self.post_free),
        ]
        for method, path, handler in routes:
            self.app.router.add_route(method, path, handler)
            self.app.router.add_route(method, "/api" + path, handler)
        self.app.router.add_get("/simcomfy/counters", self.get_counters)
        self.app.router.add_post("/simcomfy/hold", self.hold)
        self.app.router.add_post("/simcomfy/release", self.release)

    def server(self, request: web.Request) -> SimServer:
        """The server this request is for (its route counted); a stopped server's
        connections are dropped."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        server = self.by_port.get(sockname[1]) if sockname else None
        if server is None:
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable()
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else request.path
        server.counters.requests[f"{request.method} {path.removeprefix('/api')}"] += 1
        return server

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        server = self.server(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        server.sockets.pop(sid, None)
        server.sockets[sid] = ws
        server.socket_flags[sid] = {"feature_flags": {}}
        try:
            await server.send("status", {"status": server.queue_info(), "sid": sid}, sid)
            if server.client_id == sid and server.last_node_id is not None:
                await server.send("executing", {"node": server.last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError, AttributeError):
                    data = json.loads(msg.data)
                    if first and data.get("type") == "feature_flags":
                        server.socket_flags[sid]["feature_flags"] = data.get("data", {})
                        await server.send("feature_flags", dict(FEATURES), sid)
                first = False
        finally:
            server.sockets.pop(sid, None)
            server.socket_flags.pop(sid, None)
        return ws

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.server(request).queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        server = self.server(request)
        return server.accept(await request.json())

    async def get_queue(self, request: web.Request) -> web.Response:
        server = self.server(request)
        running = [list(server.running)] if server.running is not None else []
        pending = [list(item) for item in server.queue]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        server = self.server(request)
        body = await request.json()
        if body.get("clear"):
            server.wipe_queue()
        for prompt_id in body.get("delete", ()):
            server.delete(prompt_id)
        return web.Response()

    async def post_interrupt(self, request: web.Request) -> web.Response:
        server = self.server(request)
        try:
            body = await request.json()
        except ValueError:
            body = {}
        server.interrupt(body.get("prompt_id"))
        return web.Response()

    async def get_history(self, request: web.Request) -> web.Response:
        server = self.server(request)
        max_items = request.query.get("max_items")
        offset = int(request.query.get("offset", -1))
        entries = server.get_history(int(max_items) if max_items else None, offset)
        return web.json_response(entries)

    async def get_history_entry(self, request: web.Request) -> web.Response:
        server = self.server(request)
        prompt_id = request.match_info["prompt_id"]
        entry = server.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        server = self.server(request)
        body = await request.json()
        if body.get("clear"):
            server.history.clear()
        for prompt_id in body.get("delete", ()):
            server.history.pop(prompt_id, None)
        return web.Response()

    async def post_free(self, request: web.Request) -> web.Response:
        server = self.server(request)
        body = await request.json()
        if body.get("unload_models") or body.get("free_memory"):
            server.loaded = frozenset()
        if body.get("free_memory"):
            server.cache, server.cached_ui = set(), {}
        return web.Response()

    async def get_view(self, request: web.Request) -> web.Response:
        return self.server(request).view(request.query)

    async def get_object_info(self, request: web.Request) -> web.Response:
        body = self.server(request).info_body
        return web.Response(body=body, content_type="application/json")

    async def get_node_info(self, request: web.Request) -> web.Response:
        server, name = self.server(request), request.match_info["node_class"]
        return web.json_response({name: server.info[name]} if name in server.info else {})

    async def get_models(self, request: web.Request) -> web.Response:
        models = self.server(request).settings.models
        folder = request.match_info.get("folder")
        if folder is None:
            return web.json_response(sorted(models))
        if folder not in models:
            return web.Response(status=404)
        return web.json_response(sorted(models[folder]))

    def fixed(self, answer: Any) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            self.server(request)
            return web.json_response(answer)

        return handler

    async def get_counters(self, request: web.Request) -> web.Response:
        server = self.server(request)
        return web.json_response({**server.counters.as_json(), "cpu_s": time.process_time()})

    async def hold(self, request: web.Request) -> web.Response:
        """Start no queued job from now on (the running one, if any, finishes); with a body
        ``{"after": n}``, once ``n`` more have started; with ``{"running": true}``, and stop
        the running one between two nodes."""
        server = self.server(request)
        body = (await request.json()) if request.can_read_body else {}
        if body.get("after"):
            server.start_budget = int(body["after"])
            server.starting.set()  # (a held server starts those n)
        else:
            server.starting.clear()
        if body.get("running"):
            server.advancing.clear()
        return web.json_response({"queued": len(server.queue)})

    async def release(self, request: web.Request) -> web.Response:
        server = self.server(request)
        server.start_budget = None
        server.starting.set()
        server.advancing.set()
        return web.json_response({"queued": len(server.queue)})

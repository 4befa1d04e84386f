"""Running one job on one server: submit idempotently, watch, fetch outputs.

The watch prefers the websocket and falls back to polling ``/history`` (and ``/queue``) with
backoff whenever the socket is unavailable or drops; events the socket missed are replayed
from the history entry. A job is finished only when its history entry exists: ComfyUI sends
``execution_success`` before writing history, so completion waits for the entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import stamina

from comfyfn._http import HttpSession
from comfyfn._socket import LOST, PROBE, EventSocket
from comfyfn.errors import GenerationTimeout, Interrupted, NoOutputs, TransportError
from comfyfn.events import (
    BinaryFrame,
    Done,
    Event,
    Failed,
    NodeCached,
    NodeFinished,
    NodeStarted,
    Queued,
    Started,
    Succeeded,
    events_from_history,
    parse_message,
)
from comfyfn.events import Interrupted as InterruptedEvent
from comfyfn.graph import ApiGraph, class_types
from comfyfn.rejection import workflow_invalid_from_response
from comfyfn.result import Generation, Image, Timings

__all__ = ["JobSettings", "queue_position", "run_job", "submit"]

log = logging.getLogger("comfyfn")


@dataclass(frozen=True)
class JobSettings:
    client_id: str
    timeout: float | None = None  #: whole-job deadline in seconds (None = none)
    check_interval: float = 5.0  #: with a live socket, check the server after this much silence
    history_wait: float = 10.0  #: how long to wait for the history entry after completion
    extra_data: Mapping[str, Any] = field(default_factory=dict)


def queue_position(queue: Mapping[str, Any], prompt_id: str) -> int | None:
    """Jobs ahead of ``prompt_id`` in a ``GET /queue`` answer (0 = next); None if absent."""
    running = [item[1] for item in queue.get("queue_running") or ()]
    pending = sorted(queue.get("queue_pending") or (), key=lambda item: item[0])
    if prompt_id in running:
        return 0
    for i, item in enumerate(pending):
        if item[1] == prompt_id:
            return len(running) + i
    return None


async def _known(session: HttpSession, prompt_id: str) -> bool:
    queue = await session.get_json("/queue")
    if queue_position(queue, prompt_id) is not None:
        return True
    return bool(await session.get_json(f"/history/{prompt_id}"))


async def submit(
    session: HttpSession, graph: ApiGraph, prompt_id: str, settings: JobSettings
) -> int | None:
    """POST /prompt once; if the answer is lost, look the id up instead of posting blindly.

    ComfyUI keeps a client-given ``prompt_id``, so after a failure whose outcome is unknown
    (timeout, dropped connection) the job is found in ``/queue`` or ``/history`` if it was
    accepted, and only re-posted if it was not.
    """
    payload = {
        "prompt": graph,
        "client_id": settings.client_id,
        "prompt_id": prompt_id,
        "extra_data": dict(settings.extra_data),
    }
    for attempt in range(1, session.retries + 2):
        try:
            response = await session.client.post("/prompt", json=payload)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
            raise session.error_for_exception("POST", "/prompt", exc) from exc
        except httpx.HTTPError as exc:
            # The answer was lost: the job may be queued, or still being validated. Look
            # twice, a moment apart, before concluding the server never got it.
            if await _known(session, prompt_id) or (
                await asyncio.sleep(0.25) is None and await _known(session, prompt_id)
            ):
                log.info("submission %s was accepted despite %s", prompt_id, type(exc).__name__)
                return None
            if attempt > session.retries:
                raise TransportError(
                    f"POST /prompt to {session.server} kept failing: {type(exc).__name__}: {exc}",
                    server=session.server,
                ) from exc
            log.info("re-submitting %s after %s (the server does not have it)", prompt_id, exc)
            continue
        if response.status_code == 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise workflow_invalid_from_response(body, server=session.server)
        if response.status_code >= 400:
            raise session.error_for_status("POST", "/prompt", response)
        return response.json().get("number")
    raise AssertionError("unreachable")  # pragma: no cover


async def cancel(session: HttpSession, prompt_id: str) -> str:
    """Dequeue a pending job or interrupt a running one: 'dequeued', 'interrupted' or 'absent'."""
    queue = await session.get_json("/queue")
    running = {item[1] for item in queue.get("queue_running") or ()}
    pending = {item[1] for item in queue.get("queue_pending") or ()}
    if prompt_id in pending:
        await session.send("POST", "/queue", json={"delete": [prompt_id]})
        return "dequeued"
    if prompt_id in running:
        await session.send("POST", "/interrupt", json={"prompt_id": prompt_id})
        return "interrupted"
    return "absent"


class _Watch:
    """State of one job while it is watched."""

    def __init__(self, session: HttpSession, prompt_id: str, graph: ApiGraph) -> None:
        self.session = session
        self.prompt_id = prompt_id
        self.types = class_types(graph)
        self.seen: set[tuple[str, str]] = set()
        self.frames: list[BinaryFrame] = []
        self.cached: tuple[str, ...] = ()
        self.started_at: float | None = None
        self.current_node: str | None = None

    def fresh(self, events: list[Event | Done]) -> list[Event | Done]:
        """Drop events already emitted (history replays what the socket may have shown)."""
        out = []
        for ev in events:
            key = (type(ev).__name__, getattr(ev, "node_id", "") or "")
            if isinstance(ev, NodeStarted | NodeFinished | Started | NodeCached):
                if key in self.seen:
                    continue
                self.seen.add(key)
            if isinstance(ev, Started) and self.started_at is None:
                self.started_at = time.monotonic()
            if isinstance(ev, NodeCached):
                self.cached += ev.node_ids
            if isinstance(ev, NodeStarted):
                self.current_node = ev.node_id
            out.append(ev)
        return out

    async def probe(self) -> list[Event | Done]:
        """Ask the server where the job is; replays history if it finished."""
        server = self.session.server
        entry = (await self.session.get_json(f"/history/{self.prompt_id}")).get(self.prompt_id)
        if entry:
            return events_from_history(entry, self.prompt_id, class_types=self.types, server=server)
        queue = await self.session.get_json("/queue")
        position = queue_position(queue, self.prompt_id)
        if position is not None:
            running = position == 0 and any(i[1] == self.prompt_id for i in queue["queue_running"])
            return [Started(self.prompt_id)] if running else []
        # Not queued: it may have moved to history between the two calls; look once more.
        entry = (await self.session.get_json(f"/history/{self.prompt_id}")).get(self.prompt_id)
        if entry:
            return events_from_history(entry, self.prompt_id, class_types=self.types, server=server)
        return [
            InterruptedEvent(
                self.prompt_id,
                Interrupted(
                    "the job is neither queued nor in the history: it was removed from the queue "
                    "(or the server restarted) before it ran",
                    server=server,
                    prompt_id=self.prompt_id,
                    lost=True,
                ),
            )
        ]

    async def history_entry(self, wait: float) -> Mapping[str, Any]:
        """The finished job's history entry, waiting out the write race."""
        deadline = time.monotonic() + wait
        delay = 0.01
        while True:
            data = await self.session.get_json(f"/history/{self.prompt_id}")
            if entry := data.get(self.prompt_id):
                return entry
            if time.monotonic() > deadline:
                raise NoOutputs(
                    f"the job finished but its history did not appear within {wait:g}s",
                    server=self.session.server,
                    prompt_id=self.prompt_id,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def _fetch_images(
    session: HttpSession,
    entry: Mapping[str, Any],
    frames: list[BinaryFrame],
    types: Mapping[str, str],
) -> list[Image]:
    refs = [
        (str(node_id), ref)
        for node_id, output in (entry.get("outputs") or {}).items()
        for ref in output.get("images") or ()
    ]

    async def view(node_id: str, ref: Mapping[str, Any]) -> Image:
        params = {
            "filename": ref["filename"],
            "subfolder": ref.get("subfolder", ""),
            "type": ref.get("type", "output"),
        }
        async for attempt in stamina.retry_context(
            on=httpx.TransportError, attempts=session.retries + 1, wait_initial=0.05, wait_max=1.0
        ):
            with attempt:
                try:
                    async with session.client.stream("GET", "/view", params=params) as response:
                        if response.status_code >= 400:
                            await response.aread()
                            raise session.error_for_status("GET", "/view", response)
                        data = b"".join([chunk async for chunk in response.aiter_bytes()])
                except httpx.TransportError as exc:
                    if attempt.num > session.retries:
                        raise session.error_for_exception("GET", "/view", exc) from exc
                    raise
        return Image(data, node_id, ref["filename"], params["subfolder"], params["type"])

    images = list(await asyncio.gather(*(view(n, r) for n, r in refs)))
    images += [
        Image(f.data, f.node_id, None, "", "websocket")
        for f in frames
        if f.node_id is None or types.get(f.node_id) == "SaveImageWebsocket"
    ]
    return images


def _timings(entry: Mapping[str, Any], submitted: float) -> Timings:
    total = time.monotonic() - submitted
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"].get("messages", ())}
    created = (entry.get("prompt") or [None] * 4)[3] or {}
    created = created.get("create_time") if isinstance(created, Mapping) else None
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    if created and start and end:
        return Timings(max(start - created, 0) / 1000, max(end - start, 0) / 1000, total)
    return Timings(0.0, total, total)


async def run_job(
    session: HttpSession,
    socket: EventSocket,
    graph: ApiGraph,
    params: Mapping[str, Any],
    settings: JobSettings,
    *,
    prompt_id: str | None = None,
    attach: bool = False,
) -> AsyncIterator[Event]:
    """Submit ``graph`` and yield its events; the last is Succeeded, Failed or Interrupted.

    With ``attach`` the job ``prompt_id`` was submitted earlier (perhaps by another
    process): it is watched, and its outputs fetched, without submitting anything.
    """
    prompt_id = prompt_id or str(uuid.uuid4())
    submitted = time.monotonic()
    deadline = submitted + settings.timeout if settings.timeout is not None else None
    queue = socket.subscribe(prompt_id) if await socket.ensure() else None
    watch = _Watch(session, prompt_id, graph)
    finished = False  # until then, leaving early cancels the job (harmless if never queued)
    try:
        if not attach:
            await submit(session, graph, prompt_id, settings)
        position = queue_position(await session.get_json("/queue"), prompt_id)
        yield Queued(prompt_id, position if position is not None else 0)
        delay = 0.02
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                with contextlib.suppress(TransportError):
                    await cancel(session, prompt_id)
                finished = True
                raise GenerationTimeout(
                    server=session.server, prompt_id=prompt_id, timeout=settings.timeout or 0
                )
            if queue is not None:
                wait = (
                    settings.check_interval
                    if remaining is None
                    else min(remaining, settings.check_interval)
                )
                try:
                    item = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    item = PROBE
                if item is LOST:
                    queue = None
                    events = await watch.probe()
                elif item is PROBE:
                    events = await watch.probe()
                elif isinstance(item, BinaryFrame):
                    watch.frames.append(
                        item
                        if item.node_id
                        else BinaryFrame(
                            item.event, item.data, item.image_type, watch.current_node, prompt_id
                        )
                    )
                    events = []
                else:
                    events = parse_message(
                        item, prompt_id, class_types=watch.types, server=session.server
                    )
            else:
                await asyncio.sleep(
                    delay * random.uniform(0.5, 1.0) if remaining is None else min(delay, remaining)
                )
                delay = min(delay * 2, 1.0)
                events = await watch.probe()
                if await socket.ensure():
                    queue = socket.subscribe(prompt_id)
                    events += await watch.probe()  # anything sent before we re-subscribed
            for ev in watch.fresh(events):
                if isinstance(ev, Done):
                    entry = await watch.history_entry(settings.history_wait)
                    replay = events_from_history(
                        entry, prompt_id, class_types=watch.types, server=session.server
                    )
                    terminal = [e for e in replay if isinstance(e, Failed | InterruptedEvent)]
                    if terminal:
                        finished = True
                        yield terminal[0]
                        return
                    for late in watch.fresh(replay):
                        if not isinstance(late, Done):
                            yield late
                    images = await _fetch_images(session, entry, watch.frames, watch.types)
                    if not images:
                        finished = True
                        raise NoOutputs(
                            "the job finished without any image output",
                            server=session.server,
                            prompt_id=prompt_id,
                        )
                    generation = Generation(
                        prompt_id=prompt_id,
                        server=session.server,
                        images=tuple(
                            _with_provenance(img, params, graph, session.server, prompt_id)
                            for img in images
                        ),
                        params=dict(params),
                        workflow=graph,
                        timings=_timings(entry, submitted),
                        cached_nodes=watch.cached,
                    )
                    finished = True
                    yield Succeeded(prompt_id, generation)
                    return
                yield ev
                if isinstance(ev, Failed | InterruptedEvent):
                    finished = True
                    return
    finally:
        socket.unsubscribe(prompt_id)
        if not finished:
            # Cancelled or abandoned by the caller: do not leave a GPU job behind.
            with contextlib.suppress(Exception):
                await asyncio.shield(cancel(session, prompt_id))


def _with_provenance(
    image: Image, params: Mapping[str, Any], graph: ApiGraph, server: str, prompt_id: str
) -> Image:
    provenance = {**params, "server": server, "prompt_id": prompt_id}
    if image.width and image.height:
        provenance.setdefault("width", image.width)
        provenance.setdefault("height", image.height)
    return Image(
        image.data, image.node_id, image.filename, image.subfolder, image.type, provenance, graph
    )

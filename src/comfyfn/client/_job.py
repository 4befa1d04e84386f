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

from comfyfn.client._http import HttpSession
from comfyfn.client._outputs import fetch_images
from comfyfn.client._rejection import workflow_invalid_from_response
from comfyfn.client._socket import LOST, PROBE, EventSocket
from comfyfn.errors import (
    GenerationTimeout,
    Interrupted,
    NoOutputs,
    ProtocolError,
    TransportError,
)
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
    describe,
    events_from_history,
    history_entry_problem,
    parse_message,
)
from comfyfn.events import Interrupted as InterruptedEvent
from comfyfn.result import Generation, Image, Timings
from comfyfn.workflow._graph import ApiGraph, class_types

__all__ = ["JobSettings", "queue_position", "run_job", "submit"]

log = logging.getLogger("comfyfn")


@dataclass(frozen=True)
class JobSettings:
    """How one job is run and checked.

    Every fetched image must decode completely (a damaged ``/view`` body is fetched again,
    then the job fails with :class:`~comfyfn.errors.CorruptOutput`). ``expect_size``
    (``(width, height)``): when set, every image from a SaveImage, PreviewImage or
    SaveImageWebsocket node must have exactly this size, or the job fails with
    CorruptOutput naming both sizes. Leave it ``None`` for workflows that scale, crop or
    otherwise change the size after the latent.
    """

    client_id: str
    timeout: float | None = None  #: whole-job deadline in seconds (None = none)
    check_interval: float = 5.0  #: with a live socket, check the server after this much silence
    history_wait: float = 10.0  #: how long to wait for the history entry after completion
    extra_data: Mapping[str, Any] = field(default_factory=dict)
    #: leaving the job before it ends (closed, cancelled, an error) cancels it on the server;
    #: False leaves it there for the caller to re-attach or cancel (the deadline still cancels)
    cancel_on_exit: bool = True
    expect_size: tuple[int, int] | None = None  #: every saved/previewed image must be this size


def _queue_ids(queue: Any, server: str | None) -> tuple[list[str], list[str]]:
    """Prompt ids running, and pending in queue order, in a ``GET /queue`` answer."""

    def bad(what: str) -> ProtocolError:
        return ProtocolError(
            f"GET /queue from {server or 'the server'} answered {what}",
            server=server,
            method="GET",
            path="/queue",
            body=repr(queue)[:2000],
        )

    if not isinstance(queue, Mapping):
        raise bad(f"{describe(queue)} where an object was expected")
    found: list[list[Any]] = []
    for key in ("queue_running", "queue_pending"):
        items = queue.get(key)
        if not isinstance(items, list):
            raise bad(
                f"an object whose {key!r} is {'missing' if key not in queue else describe(items)}"
            )
        for item in items:
            if not (
                isinstance(item, list | tuple)
                and len(item) >= 2
                and isinstance(item[0], int | float)
                and isinstance(item[1], str)
            ):
                raise bad(f"a {key!r} item that is not [number, prompt id, …]: {item!r:.120}")
        found.append(items)
    running, pending = found
    return [i[1] for i in running], [i[1] for i in sorted(pending, key=lambda i: i[0])]


def queue_position(
    queue: Mapping[str, Any], prompt_id: str, *, server: str | None = None
) -> int | None:
    """Jobs ahead of ``prompt_id`` in a ``GET /queue`` answer (0 = next); None if absent.

    An answer of the wrong shape raises :class:`~comfyfn.errors.ProtocolError`.
    """
    running, pending = _queue_ids(queue, server)
    if prompt_id in running:
        return 0
    if prompt_id in pending:
        return len(running) + pending.index(prompt_id)
    return None


async def _get_queue(session: HttpSession) -> tuple[list[str], list[str]]:
    return _queue_ids(await session.get_json("/queue", expect=dict), session.server)


async def _get_entry(session: HttpSession, prompt_id: str) -> Mapping[str, Any] | None:
    """The job's ``/history`` entry, None if it has none yet; ProtocolError if malformed."""
    path = f"/history/{prompt_id}"
    entry = (await session.get_json(path, expect=dict)).get(prompt_id)
    if entry is None or entry == {}:
        return None
    if problem := history_entry_problem(entry):
        raise session.protocol_error("GET", path, problem, entry)
    return entry


async def _known(session: HttpSession, prompt_id: str) -> bool:
    running, pending = await _get_queue(session)
    if prompt_id in running or prompt_id in pending:
        return True
    return await _get_entry(session, prompt_id) is not None


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
        number = session.decode_json("POST", "/prompt", response, dict).get("number")
        return number if isinstance(number, int) else None
    raise AssertionError("unreachable")  # pragma: no cover


async def cancel(session: HttpSession, prompt_id: str) -> str:
    """Dequeue a pending job or interrupt a running one: 'dequeued', 'interrupted' or 'absent'."""
    running, pending = await _get_queue(session)
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
        entry = await _get_entry(self.session, self.prompt_id)
        if entry is not None:
            return events_from_history(entry, self.prompt_id, class_types=self.types, server=server)
        running, pending = await _get_queue(self.session)
        if self.prompt_id in running:
            return [Started(self.prompt_id)]
        if self.prompt_id in pending:
            return []
        # Not queued: it may have moved to history between the two calls; look once more.
        entry = await _get_entry(self.session, self.prompt_id)
        if entry is not None:
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
            if (entry := await _get_entry(self.session, self.prompt_id)) is not None:
                return entry
            if time.monotonic() > deadline:
                raise NoOutputs(
                    f"the job finished but its history did not appear within {wait:g}s",
                    server=self.session.server,
                    prompt_id=self.prompt_id,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def _timings(entry: Mapping[str, Any], submitted: float) -> Timings:
    """Queue and execution times from the history entry's server timestamps (if usable)."""
    total = time.monotonic() - submitted
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"].get("messages") or ()}
    prompt = entry.get("prompt")
    extra = prompt[3] if isinstance(prompt, list) and len(prompt) > 3 else None
    created = extra.get("create_time") if isinstance(extra, Mapping) else None
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    numbers = [v for v in (created, start, end) if isinstance(v, int | float) and v]
    if len(numbers) == 3:
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
        answer = await session.get_json("/queue", expect=dict)
        position = queue_position(answer, prompt_id, server=session.server)
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
                    images = await fetch_images(
                        session,
                        entry,
                        watch.frames,
                        watch.types,
                        prompt_id=prompt_id,
                        expect_size=settings.expect_size,
                    )
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
        if not finished and settings.cancel_on_exit:
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

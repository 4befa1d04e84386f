"""Running one job on one server: submit idempotently, follow it, fetch its outputs.

Following prefers the websocket and falls back to polling ``/history`` (and ``/queue``) with
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
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeGuard

import httpx

from comfyfn.client._http import HttpSession
from comfyfn.client._lookup import accepted, cancel, get_entry, get_queue, queue_position
from comfyfn.client._outputs import fetch_outputs
from comfyfn.client._rejection import workflow_invalid_from_response
from comfyfn.client._socket import JOB_TAG, LOST, PROBE, EventSocket
from comfyfn.errors import (
    ConfigError,
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
    Preview,
    Progress,
    Queued,
    Started,
    Stopped,
    Succeeded,
    events_from_history,
    parse_message,
)
from comfyfn.result import Generation, Image, Output, Timings
from comfyfn.workflow import ApiGraph, class_types

__all__ = ["JobSettings", "JobSpec", "check_prompt_id", "follow", "post_prompt"]

log = logging.getLogger("comfyfn")

Subscription = asyncio.Queue[Any]


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
    #: sent with the prompt (the Comfy.org key for partner nodes): never shown
    extra_data: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: leaving the job before it ends (closed, cancelled, an error) cancels it on the server;
    #: False leaves it there for the caller to re-attach or cancel (the deadline still cancels)
    cancel_on_exit: bool = True
    expect_size: tuple[int, int] | None = None  #: every saved/previewed image must be this size


@dataclass(frozen=True)
class JobSpec:
    """One job: its id, what runs, how, and since when (the deadline counts from ``since``:
    submission, or attaching)."""

    prompt_id: str
    graph: ApiGraph
    params: Mapping[str, Any]
    settings: JobSettings
    since: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float | None:
        timeout = self.settings.timeout
        return None if timeout is None else self.since + timeout


def check_prompt_id(prompt_id: object) -> str:
    """``prompt_id`` if it is a UUID in canonical form (lowercase, hyphenated: what
    ``str(uuid.uuid4())`` gives); else a ConfigError saying what is wrong.

    ComfyUI 0.28 rejects any other id (400 ``invalid_prompt_id``) and keeps ids verbatim
    everywhere, so the one form works on every server.
    """
    if not isinstance(prompt_id, str):
        raise ConfigError(f"prompt_id must be a string, not {type(prompt_id).__name__}")
    try:
        canonical = str(uuid.UUID(prompt_id))
    except ValueError:
        raise ConfigError(
            f"prompt_id {prompt_id!r} is not a UUID: ComfyUI takes only a UUID in canonical "
            "form such as str(uuid.uuid4()); leave prompt_id out to get one"
        ) from None
    if prompt_id != canonical:
        wrong = (
            "has uppercase letters"
            if prompt_id.lower() == canonical
            else "is not in canonical form (lowercase, hyphenated, nothing around it)"
        )
        raise ConfigError(f"prompt_id {prompt_id!r} {wrong}: ComfyUI takes only {canonical!r}")
    return prompt_id


async def post_prompt(
    session: HttpSession, graph: ApiGraph, prompt_id: str, settings: JobSettings
) -> int | None:
    """POST /prompt; if the answer is lost or unreadable, look the id up instead of posting
    blindly.

    ComfyUI keeps a client-given ``prompt_id``, so after a failure whose outcome is unknown
    (timeout, dropped connection, an answer that is not ComfyUI's) the job is found in
    ``/queue`` or ``/history`` if it was accepted, and only re-posted if it was not: up to
    ``session.retries`` times after a lost answer, once after an unreadable one (a proxy's
    login page will not change), then the error is raised. Returns the queue number.
    """
    payload = {
        "prompt": graph,
        "client_id": settings.client_id,
        "prompt_id": prompt_id,
        # tagged with our job id: servers that echo it let the socket drop others' events
        "extra_data": {**settings.extra_data, "metadata": {JOB_TAG: prompt_id}},
    }
    lost = unreadable = 0
    while True:
        try:
            answer = await _post_once(session, payload)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
            raise session.error_for_exception("POST", "/prompt", exc) from exc
        except httpx.HTTPError as exc:
            if await accepted(session, prompt_id):
                log.info("submission %s was accepted despite %s", prompt_id, type(exc).__name__)
                return None
            lost += 1
            detail = f"{type(exc).__name__}: {session.credentials.redact(str(exc))}"
            if lost > session.retries:
                raise TransportError(
                    f"POST /prompt to {session.server} kept failing: {detail}",
                    server=session.server,
                ) from exc
            log.info("re-submitting %s after %s (the server does not have it)", prompt_id, detail)
            continue
        if not isinstance(answer, ProtocolError):
            return answer
        if await accepted(session, prompt_id):
            log.info("submission %s was accepted despite: %s", prompt_id, answer)
            return None
        unreadable += 1
        if unreadable > 1:
            raise answer
        log.info("re-submitting %s after: %s (the server does not have it)", prompt_id, answer)


async def _post_once(session: HttpSession, payload: dict[str, Any]) -> int | ProtocolError | None:
    """One POST /prompt: the queue number ComfyUI gave (None if it gave none), or the
    ProtocolError of an answer that is not ComfyUI's (not JSON, no ``prompt_id``); a
    rejection raises WorkflowInvalid, another error status HTTPStatusError."""
    response = await session.client.post(session.url("/prompt"), json=payload)
    if response.status_code == 400:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        raise workflow_invalid_from_response(body, server=session.server)
    if response.status_code >= 400:
        raise session.error_for_status("POST", "/prompt", response)
    try:
        answer = session.decode_json("POST", "/prompt", response, dict)
    except ProtocolError as exc:
        return exc
    if "prompt_id" not in answer:
        what = f"an object without 'prompt_id' ({', '.join(map(repr, answer)) or 'empty'})"
        return session.protocol_error("POST", "/prompt", what, answer)
    number = answer.get("number")
    return number if isinstance(number, int) else None


class _Watch:
    """Following one job: socket messages or polls in, fresh events out."""

    def __init__(
        self,
        session: HttpSession,
        socket: EventSocket,
        spec: JobSpec,
        subscription: Subscription | None,
    ) -> None:
        self.session = session
        self.socket = socket
        self.spec = spec
        self.prompt_id = spec.prompt_id
        self.settings = spec.settings
        self.types = class_types(spec.graph)
        self.subscription = subscription  #: None while polling
        self.subscribed = subscription  #: the last queue we subscribed (to unsubscribe it)
        self.seen: set[tuple[str, str]] = set()
        self.frames: list[BinaryFrame] = []
        self.cached: tuple[str, ...] = ()
        self.current_node: str | None = None
        self.steps: dict[str | None, int] = {}  #: each node's last Progress value
        self.delay = 0.02
        self.ended = False  #: the job is over on the server (or was cancelled by us)

    def fresh(self, events: list[Event | Done]) -> list[Event | Done]:
        """Drop events already emitted (history replays what the socket may have shown)."""
        out = []
        for ev in events:
            key = (type(ev).__name__, getattr(ev, "node_id", "") or "")
            if isinstance(ev, NodeStarted | NodeFinished | Started | NodeCached):
                if key in self.seen:
                    continue
                self.seen.add(key)
            if isinstance(ev, NodeCached):
                self.cached += ev.node_ids
            if isinstance(ev, NodeStarted):
                self.current_node = ev.node_id
            if isinstance(ev, Progress):
                self.steps[ev.node_id] = ev.value
            out.append(ev)
        return out

    def replay(self, entry: Mapping[str, Any]) -> list[Event | Done]:
        server = self.session.server
        return events_from_history(entry, self.prompt_id, class_types=self.types, server=server)

    async def position(self) -> int:
        """Jobs ahead of this one now (0 when it runs, or has already left the queue), from
        ``GET /queue``: the socket's ``status`` messages count jobs but name none, and one
        sent before our submission may arrive after it, so they cannot place ours."""
        answer = await self.session.get_dict("/queue")
        position = queue_position(answer, self.prompt_id, server=self.session.server)
        return position if position is not None else 0

    async def probe(self) -> list[Event | Done]:
        """Ask the server where the job is; replays history if it finished."""
        entry = await get_entry(self.session, self.prompt_id)
        if entry is not None:
            return self.replay(entry)
        running, pending = await get_queue(self.session)
        if self.prompt_id in running:
            return [Started(self.prompt_id)]
        if self.prompt_id in pending:
            return []
        # Not queued: it may have moved to history between the two calls; look once more.
        entry = await get_entry(self.session, self.prompt_id)
        if entry is not None:
            return self.replay(entry)
        return [self.lost()]

    def lost(self) -> Stopped:
        return Stopped(
            self.prompt_id,
            Interrupted(
                "the job is neither queued nor in the history: it was removed from the queue "
                "(or the server restarted) before it ran",
                server=self.session.server,
                prompt_id=self.prompt_id,
                lost=True,
            ),
        )

    async def next_events(self) -> list[Event | Done]:
        """Wait for news of the job: a socket message, or a poll (with backoff)."""
        deadline = self.spec.deadline
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            await self.expire()
        if self.subscription is not None:
            return await self.from_socket(self.subscription, remaining)
        return await self.poll(remaining)

    async def expire(self) -> NoReturn:
        with contextlib.suppress(TransportError):
            await cancel(self.session, self.prompt_id)
        self.ended = True
        raise GenerationTimeout(
            server=self.session.server, prompt_id=self.prompt_id, timeout=self.settings.timeout or 0
        )

    async def from_socket(
        self, subscription: Subscription, remaining: float | None
    ) -> list[Event | Done]:
        interval = self.settings.check_interval
        try:  # asyncio.timeout: wait_for would make a task per message
            async with asyncio.timeout(interval if remaining is None else min(remaining, interval)):
                item = await subscription.get()
        except TimeoutError:
            item = PROBE
        if item is LOST:
            self.subscription = None
            return await self.probe()
        if item is PROBE:
            return await self.probe()
        if isinstance(item, BinaryFrame):
            return self.frame(item)
        return parse_message(
            item, self.prompt_id, class_types=self.types, server=self.session.server
        )

    def frame(self, item: BinaryFrame) -> list[Event | Done]:
        """A SaveImageWebsocket image (or one from a node of unknown class) is kept as an
        output; an image from any other node is a preview. A legacy frame says nothing of its
        node: the running one sent it."""
        node = item.node_id or self.current_node
        class_type = self.types.get(node or "")
        if class_type in (None, "SaveImageWebsocket"):
            self.frames.append(
                BinaryFrame(item.event, item.data, item.image_type, node, self.prompt_id)
            )
            return []
        step = self.steps.get(node)
        return [Preview(self.prompt_id, node, item.data, step, item.image_type, class_type)]

    async def poll(self, remaining: float | None) -> list[Event | Done]:
        jittered = self.delay * random.uniform(0.5, 1.0)
        await asyncio.sleep(jittered if remaining is None else min(self.delay, remaining))
        self.delay = min(self.delay * 2, 1.0)
        events = await self.probe()
        if await self.socket.ensure():
            self.subscription = self.subscribed = self.socket.subscribe(self.prompt_id)
            events += await self.probe()  # anything sent before we subscribed
        return events

    async def history_entry(self, wait: float) -> Mapping[str, Any]:
        """The finished job's history entry, waiting out the write race."""
        deadline = time.monotonic() + wait
        delay = 0.01
        while True:
            if (entry := await get_entry(self.session, self.prompt_id)) is not None:
                return entry
            if time.monotonic() > deadline:
                raise NoOutputs(
                    f"the job finished but its history did not appear within {wait:g}s",
                    server=self.session.server,
                    prompt_id=self.prompt_id,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def finish(self) -> AsyncGenerator[Event, None]:
        """The job is done: its last events from history, then Succeeded (or its failure)."""
        entry = await self.history_entry(self.settings.history_wait)
        replay = self.replay(entry)
        if terminal := [e for e in replay if isinstance(e, Failed | Stopped)]:
            yield terminal[0]
            return
        for late in self.fresh(replay):
            if not isinstance(late, Done):
                yield late
        images, outputs = await fetch_outputs(
            self.session,
            entry,
            self.frames,
            self.types,
            prompt_id=self.prompt_id,
            expect_size=self.settings.expect_size,
        )
        if not outputs:
            raise NoOutputs(
                "the job finished without any output",
                server=self.session.server,
                prompt_id=self.prompt_id,
            )
        yield Succeeded(self.prompt_id, self.generation(entry, images, outputs))

    def generation(
        self, entry: Mapping[str, Any], images: list[Image], outputs: list[Output]
    ) -> Generation:
        spec, server = self.spec, self.session.server
        return Generation(
            prompt_id=self.prompt_id,
            server=server,
            images=tuple(_with_provenance(i, spec, server) for i in images),
            params=dict(spec.params),
            workflow=spec.graph,
            timings=_timings(entry, spec.since),
            cached_nodes=self.cached,
            outputs=tuple(outputs),
        )


async def follow(
    session: HttpSession,
    socket: EventSocket,
    spec: JobSpec,
    subscription: Subscription | None,
) -> AsyncGenerator[Event, None]:
    """Yield a submitted job's events: :class:`Queued` first, :class:`Succeeded`,
    :class:`Failed` or :class:`Stopped` last; what keeps it from ending so is raised.

    ``subscription`` is the socket queue subscribed before the job was submitted (so no
    message was missed); None follows by polling first, then subscribes. Leaving before the
    end cancels the job unless ``spec.settings.cancel_on_exit`` is False.
    """
    watch = _Watch(session, socket, spec, subscription)
    try:
        yield Queued(spec.prompt_id, await watch.position())
        while True:
            for event in watch.fresh(await watch.next_events()):
                if isinstance(event, Done):
                    watch.ended = True  # the server is done with it: nothing left to cancel
                    async for last in watch.finish():
                        yield last
                    return
                watch.ended = isinstance(event, Failed | Stopped)
                yield event
                if watch.ended:
                    return
    finally:
        if watch.subscribed is not None:
            socket.unsubscribe(spec.prompt_id, watch.subscribed)
        if not watch.ended and spec.settings.cancel_on_exit:
            # Cancelled or abandoned by the caller: do not leave a GPU job behind.
            with contextlib.suppress(Exception):
                await asyncio.shield(cancel(session, spec.prompt_id))


def _timings(entry: Mapping[str, Any], since: float) -> Timings:
    """Queue and execution times from the history entry's server timestamps (if usable)."""
    total = time.monotonic() - since
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"].get("messages") or ()}
    prompt = entry.get("prompt")
    extra = prompt[3] if isinstance(prompt, list) and len(prompt) > 3 else None
    created = extra.get("create_time") if isinstance(extra, Mapping) else None
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    if _stamp(created) and _stamp(start) and _stamp(end):
        return Timings(max(start - created, 0) / 1000, max(end - start, 0) / 1000, total)
    return Timings(0.0, total, total)


def _stamp(value: Any) -> TypeGuard[float]:
    """A usable millisecond timestamp (a non-zero number)."""
    return isinstance(value, int | float) and bool(value)


def _with_provenance(image: Image, spec: JobSpec, server: str) -> Image:
    provenance = {**spec.params, "server": server, "prompt_id": spec.prompt_id}
    if image.width and image.height:
        provenance.setdefault("width", image.width)
        provenance.setdefault("height", image.height)
    return Image(
        image.data,
        image.node_id,
        image.filename,
        image.subfolder,
        image.type,
        provenance,
        spec.graph,
    )

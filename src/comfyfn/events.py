"""Typed, frozen job events and the pure parsers that make them from ComfyUI's messages.

A job's events arrive in this order (some may be absent)::

    Queued(position) → Started → NodeCached*
        → (NodeStarted → (Progress | Preview)* → NodeFinished?)*
        → Succeeded(generation) | Failed(error) | Stopped(error)

The last event is always one of the three *final* events; what went wrong on the client's
side of a job (the server unreachable, a deadline, a damaged image) is raised instead (see
:meth:`comfyfn.AsyncJob.events`).

Nothing here does I/O: :func:`parse_message` turns one decoded websocket message into the
events for one prompt, :func:`parse_binary_frame` decodes SaveImageWebsocket frames, and
:func:`events_from_history` replays a finished job's history when the websocket was lost.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from comfyfn import errors
from comfyfn.errors import ExecutionFailed
from comfyfn.result import Generation

__all__ = [
    "BinaryFrame",
    "Event",
    "Failed",
    "FinalEvent",
    "NodeCached",
    "NodeFinished",
    "NodeStarted",
    "Preview",
    "Progress",
    "Queued",
    "Started",
    "Stopped",
    "Succeeded",
    "events_from_history",
    "history_entry_problem",
    "parse_binary_frame",
    "parse_message",
]


@dataclass(frozen=True)
class Queued:
    """The server accepted the job; ``position`` jobs run or wait ahead of it (0 = next)."""

    prompt_id: str
    position: int


@dataclass(frozen=True)
class Started:
    """The server began executing the job."""

    prompt_id: str


@dataclass(frozen=True)
class NodeCached:
    """These nodes' results were reused from the server's cache (not executed again)."""

    prompt_id: str
    node_ids: tuple[str, ...]


@dataclass(frozen=True)
class NodeStarted:
    """A node began executing."""

    prompt_id: str
    node_id: str
    class_type: str | None = None


@dataclass(frozen=True)
class Progress:
    """Step ``value`` of ``max`` inside a node (a sampler reports its steps; ComfyUI 0.28
    sends at most one every 100 ms, but always the first and the last)."""

    prompt_id: str
    node_id: str | None
    value: int
    max: int
    class_type: str | None = None

    @property
    def fraction(self) -> float:
        return self.value / self.max if self.max else 0.0


@dataclass(frozen=True)
class Preview:
    """A sampler's preview image (sent when the server runs with ``--preview-method``):
    encoded bytes (JPEG/PNG/WebP, see ``media_type``) at sampling ``step`` (the last
    :class:`Progress` value of that node, None before any). SaveImageWebsocket images are
    outputs, never previews."""

    prompt_id: str
    node_id: str | None
    image: bytes = field(repr=False)
    step: int | None
    media_type: str = "image/jpeg"
    class_type: str | None = None


@dataclass(frozen=True)
class NodeFinished:
    """A node finished and reported UI outputs (e.g. SaveImage's file list)."""

    prompt_id: str
    node_id: str
    output: Mapping[str, Any] = field(default_factory=dict)
    class_type: str | None = None


@dataclass(frozen=True)
class Succeeded:
    """The job finished and its images were fetched."""

    prompt_id: str
    generation: Generation


@dataclass(frozen=True)
class Failed:
    """A node raised; ``error`` is the :class:`~comfyfn.ExecutionFailed` to raise."""

    prompt_id: str
    error: ExecutionFailed


@dataclass(frozen=True)
class Stopped:
    """The job stopped before it finished: interrupted while running, removed from the queue,
    or lost by the server (a restart); ``error`` is the :class:`~comfyfn.Interrupted` to raise,
    with ``error.lost`` True when the server no longer knows the job.

    (Not "Cancelled": a lost job was not cancelled by anyone; the fleet tells the two apart as
    its ``Cancelled`` and ``Lost`` outcomes.)
    """

    prompt_id: str
    error: errors.Interrupted


FinalEvent = Union[Succeeded, Failed, Stopped]  # noqa: UP007 - a runtime alias for isinstance
Event = Union[  # noqa: UP007 - a runtime alias users can isinstance-check against
    Queued,
    Started,
    NodeCached,
    NodeStarted,
    Progress,
    Preview,
    NodeFinished,
    Succeeded,
    Failed,
    Stopped,
]


@dataclass(frozen=True)
class Done:
    """Internal marker: ComfyUI said the prompt is finished (``executing`` with ``node: null``)."""

    prompt_id: str


@dataclass(frozen=True)
class BinaryFrame:
    """An image sent over the websocket (SaveImageWebsocket or a preview)."""

    event: int
    data: bytes
    image_type: str
    node_id: str | None = None
    prompt_id: str | None = None


_BINARY_PREVIEW = 1
_BINARY_PREVIEW_WITH_METADATA = 4
_IMAGE_TYPES = {1: "image/jpeg", 2: "image/png", 3: "image/webp"}


def parse_binary_frame(frame: bytes) -> BinaryFrame | None:
    """Decode a binary websocket frame; ``None`` for frame kinds that carry no image.

    Legacy format: ``[u32 event=1][u32 image type][image bytes]``.
    With ``supports_preview_metadata``: ``[u32 event=4][u32 meta length][meta json][image]``.
    """
    if len(frame) < 8:
        return None
    event, second = struct.unpack(">II", frame[:8])
    if event == _BINARY_PREVIEW:
        return BinaryFrame(event, frame[8:], _IMAGE_TYPES.get(second, "application/octet-stream"))
    if event == _BINARY_PREVIEW_WITH_METADATA:
        try:
            meta = json.loads(frame[8 : 8 + second])
        except ValueError:
            return None
        if not isinstance(meta, dict):
            return None
        return BinaryFrame(
            event,
            frame[8 + second :],
            meta.get("image_type", "image/png"),
            node_id=meta.get("node_id"),
            prompt_id=meta.get("prompt_id"),
        )
    return None


def _failed(prompt_id: str, data: Mapping[str, Any], server: str | None) -> Failed:
    return Failed(
        prompt_id,
        ExecutionFailed(
            server=server,
            prompt_id=prompt_id,
            node_id=_str_or_none(data.get("node_id")),
            class_type=data.get("node_type"),
            exception_type=data.get("exception_type", "Exception"),
            exception_message=data.get("exception_message", ""),
            traceback=data.get("traceback") or (),
        ),
    )


def _stopped(prompt_id: str, data: Mapping[str, Any], server: str | None) -> Stopped:
    node_id = _str_or_none(data.get("node_id"))
    cls = data.get("node_type")
    where = f" at node {node_id} {cls}" if node_id else ""
    return Stopped(
        prompt_id,
        errors.Interrupted(
            f"the job was interrupted{where}",
            server=server,
            prompt_id=prompt_id,
            node_id=node_id,
            class_type=cls,
        ),
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_message(
    message: Mapping[str, Any],
    prompt_id: str,
    *,
    class_types: Mapping[str, str] | None = None,
    server: str | None = None,
) -> list[Event | Done]:
    """Events for ``prompt_id`` in one decoded JSON websocket message (often none).

    ``class_types`` (node id → class) enriches node events. ``status`` messages carry
    nothing a job needs, and ``progress_state`` only repeats what ``executing`` and
    ``progress`` say (the state and step of every node so far, sent with the same throttle
    as ``progress`` on ComfyUI 0.28): both give no events. On 0.28 ``progress`` comes at
    most every 100 ms, always with a node's first and last step, so a node's
    :class:`Progress` events are increasing steps ending at ``max``, not one per step.
    """
    kind = message.get("type")
    data = message.get("data") or {}
    if not isinstance(data, Mapping) or data.get("prompt_id") != prompt_id:
        return []
    ct = class_types or {}
    if kind == "execution_start":
        return [Started(prompt_id)]
    if kind == "execution_cached":
        nodes = data.get("nodes")
        nodes = tuple(str(n) for n in nodes) if isinstance(nodes, list) else ()
        return [NodeCached(prompt_id, nodes)] if nodes else []
    if kind == "executing":
        node = data.get("node")
        if node is None:
            return [Done(prompt_id)]
        return [NodeStarted(prompt_id, str(node), ct.get(str(node)))]
    if kind == "progress":
        node = _str_or_none(data.get("node"))
        value, most = data.get("value"), data.get("max")
        if not (isinstance(value, int | float) and isinstance(most, int | float)):
            return []  # a malformed progress message carries nothing to report
        return [Progress(prompt_id, node, int(value), int(most), ct.get(node or ""))]
    if kind == "executed":
        node = str(data.get("node"))
        output = data.get("output")
        return [NodeFinished(prompt_id, node, output or {}, ct.get(node))]
    if kind == "execution_error":
        return [_failed(prompt_id, data, server)]
    if kind == "execution_interrupted":
        return [_stopped(prompt_id, data, server)]
    return []


def history_entry_problem(entry: Any) -> str | None:
    """What is wrong with a ``/history`` entry's shape, as "… answered <this>"; None if fine.

    Checks what the client reads: ``status`` (an object whose ``messages`` are
    ``[type, object]`` pairs) and ``outputs`` (objects whose ``images`` are file references).
    """
    if not isinstance(entry, Mapping):
        return f"an entry that is {describe(entry)}, not an object"
    for key in ("status", "outputs"):
        if not isinstance(entry.get(key), Mapping):
            found = "missing" if key not in entry else describe(entry[key])
            return f"an entry whose {key!r} is {found}, not an object"
    messages = entry["status"].get("messages")
    if messages is not None and not isinstance(messages, list):
        return f"an entry whose status messages are {describe(messages)}, not a list"
    for message in messages or ():
        if not (
            isinstance(message, list)
            and len(message) == 2
            and isinstance(message[0], str)
            and isinstance(message[1], Mapping)
        ):
            return f"an entry with a status message that is not [type, object]: {message!r:.120}"
    for node_id, output in entry["outputs"].items():
        if not isinstance(output, Mapping):
            return f"an entry whose output of node {node_id} is {describe(output)}, not an object"
        images = output.get("images")
        if images is None:
            continue
        if not isinstance(images, list) or not all(
            isinstance(ref, Mapping) and isinstance(ref.get("filename"), str) for ref in images
        ):
            return f"an entry whose node {node_id} lists images without file names: {images!r:.120}"
    return None


def describe(value: Any) -> str:
    """A decoded JSON value's kind, for messages: 'an object', 'a list', 'null'..."""
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else "invalid")


def events_from_history(
    entry: Mapping[str, Any],
    prompt_id: str,
    *,
    class_types: Mapping[str, str] | None = None,
    server: str | None = None,
) -> list[Event | Done]:
    """Replay the events a finished job's ``/history`` entry records.

    History keeps ``execution_start``, ``execution_cached`` and the terminal message; node
    outputs are rebuilt from ``outputs``. A completed entry always ends with :class:`Done`
    unless it records a failure or interruption.
    """
    events: list[Event | Done] = []
    status = entry.get("status") or {}
    terminal: Event | None = None
    for kind, data in status.get("messages") or ():
        msg = {"type": kind, "data": {**data, "prompt_id": prompt_id}}
        for ev in parse_message(msg, prompt_id, class_types=class_types, server=server):
            if isinstance(ev, Failed | Stopped):
                terminal = ev
            else:
                events.append(ev)
    ct = class_types or {}
    for node_id, output in (entry.get("outputs") or {}).items():
        events.append(NodeFinished(prompt_id, str(node_id), output, ct.get(str(node_id))))
    if terminal is not None:
        events.append(terminal)
    elif status.get("completed"):
        events.append(Done(prompt_id))
    return events

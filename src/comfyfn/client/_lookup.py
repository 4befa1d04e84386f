"""What a server knows about one job: its place in ``/queue``, its ``/history`` entry.

Every answer is checked for the shape the client reads; a wrong one is a
:class:`~comfyfn.errors.ProtocolError` naming the route, never a bare KeyError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from comfyfn.client._http import HttpSession
from comfyfn.errors import HTTPStatusError, ProtocolError
from comfyfn.events import describe, history_entry_problem

__all__ = [
    "accepted",
    "cancel",
    "find_graph",
    "get_entry",
    "get_queue",
    "known",
    "queue_ids",
    "queue_position",
]


def _queue_items(queue: Any, server: str | None) -> tuple[list[list[Any]], list[list[Any]]]:
    """The running and pending items of a ``GET /queue`` answer, checked."""

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
    found: list[list[list[Any]]] = []
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
        found.append([list(item) for item in items])
    running, pending = found
    return running, sorted(pending, key=lambda item: float(item[0]))


def queue_ids(queue: Any, server: str | None = None) -> tuple[list[str], list[str]]:
    """Prompt ids running, and pending in queue order, in a ``GET /queue`` answer."""
    running, pending = _queue_items(queue, server)
    return [str(i[1]) for i in running], [str(i[1]) for i in pending]


def queue_position(
    queue: Mapping[str, Any], prompt_id: str, *, server: str | None = None
) -> int | None:
    """Jobs ahead of ``prompt_id`` in a ``GET /queue`` answer (0 = next); None if absent.

    An answer of the wrong shape raises :class:`~comfyfn.errors.ProtocolError`.
    """
    running, pending = queue_ids(queue, server)
    if prompt_id in running:
        return 0
    if prompt_id in pending:
        return len(running) + pending.index(prompt_id)
    return None


async def get_queue(session: HttpSession) -> tuple[list[str], list[str]]:
    return queue_ids(await session.get_dict("/queue"), session.server)


async def get_entry(session: HttpSession, prompt_id: str) -> Mapping[str, Any] | None:
    """The job's ``/history`` entry, None if it has none yet; ProtocolError if malformed."""
    path = f"/history/{prompt_id}"
    entry = (await session.get_dict(path)).get(prompt_id)
    if entry is None or entry == {}:
        return None
    if problem := history_entry_problem(entry):
        raise session.protocol_error("GET", path, problem, entry)
    found: Mapping[str, Any] = entry
    return found


async def known(session: HttpSession, prompt_id: str) -> bool:
    """Whether the server has the job: queued, running or in its history."""
    running, pending = await get_queue(session)
    if prompt_id in running or prompt_id in pending:
        return True
    return await get_entry(session, prompt_id) is not None


async def accepted(session: HttpSession, prompt_id: str) -> bool:
    """After a lost answer to ``POST /prompt``: did the server take the job? It may still be
    validating it, so look twice, a moment apart."""
    if await known(session, prompt_id):
        return True
    await asyncio.sleep(0.25)
    return await known(session, prompt_id)


async def find_graph(session: HttpSession, prompt_id: str) -> dict[str, Any] | None:
    """The API graph the server runs (or ran) as ``prompt_id``; None if it does not know it."""
    running, pending = _queue_items(await session.get_dict("/queue"), session.server)
    for item in running + pending:
        if item[1] == prompt_id and len(item) > 2 and isinstance(item[2], Mapping):
            return dict(item[2])
    entry = await get_entry(session, prompt_id)
    prompt = entry.get("prompt") if entry is not None else None
    if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], Mapping):
        return dict(prompt[2])
    return None


async def cancel(session: HttpSession, prompt_id: str) -> str:
    """Dequeue a pending job or interrupt a running one: 'dequeued', 'interrupted' or 'absent'.

    A server with the job routes (ComfyUI 0.28: ``POST /api/jobs/{id}/cancel``) decides
    atomically, so a job that starts between our look and our cancel is still stopped;
    others get the look at ``/queue``, then ``POST /queue {"delete"}`` or ``/interrupt``.
    Which kind the server is, the first cancel learns (a 404/405 from the route) and
    remembers for the session.
    """
    if session.has_job_routes is not False:
        outcome = await _cancel_by_route(session, prompt_id)
        if outcome is not None:
            return outcome
    running, pending = await get_queue(session)
    if prompt_id in pending:
        await session.send("POST", "/queue", json={"delete": [prompt_id]})
        return "dequeued"
    if prompt_id in running:
        await session.send("POST", "/interrupt", json={"prompt_id": prompt_id})
        return "interrupted"
    return "absent"


async def _cancel_by_route(session: HttpSession, prompt_id: str) -> str | None:
    """Cancel through ``POST /api/jobs/{id}/cancel``; None if the server has no such route.

    The route answers only ``{"cancelled": bool}``; what it did shows afterwards: a dequeued
    job is gone from the server (``GET /api/jobs/{id}`` is a 404), an interrupted one is
    still known (running, then in the history).
    """
    path = f"/api/jobs/{prompt_id}/cancel"
    try:
        response = await session.idempotent("POST", path)  # safe to repeat, by design
    except HTTPStatusError as exc:
        if exc.status_code in (404, 405) and session.has_job_routes is None:
            session.has_job_routes = False  # an older ComfyUI: no job routes
            return None
        raise
    session.has_job_routes = True
    answer = session.decode_json("POST", path, response, dict)
    cancelled = answer.get("cancelled")
    if not isinstance(cancelled, bool):
        what = f"an object whose 'cancelled' is {describe(cancelled)}, not a boolean"
        raise session.protocol_error("POST", path, what, answer)
    if not cancelled:
        return "absent"
    try:
        await session.get_dict(f"/api/jobs/{prompt_id}")
    except HTTPStatusError as exc:
        if exc.status_code == 404:
            return "dequeued"
        raise
    return "interrupted"

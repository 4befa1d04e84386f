"""A ComfyUI server (real or simulated) kept busy by a job of its own, so that a test's
prompts wait in its queue for exactly as long as the test needs — the event-based way to act
"while jobs are on the server" on a machine too loaded to catch them running."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from tests.support.graphs import sleep_graph
from tests.support.polling import wait_for
from tests.support.queues import queue_of, take_off

#: seconds a blocker may take to start (the engine idle) or to leave once the ``with`` ends
SETTLE = 60.0


@contextlib.contextmanager
def blocked(url: str, color: int) -> Iterator[str]:
    """``url`` occupied by a job that runs until it is interrupted (or the server dies) for
    the ``with``, which starts once that job runs (the engine must be idle: a test's leftover
    fails here, named). When the ``with`` ends, the job is taken off the queue and
    interrupted by its prompt id, again until it is gone (ComfyUI ignores an interrupt of a
    prompt id that is not running yet); a server the test killed is left alone. Yields the
    job's prompt id."""
    graph = sleep_graph(color, milliseconds=600_000, steps=6000)
    answer = httpx.post(f"{url}/prompt", json={"prompt": graph}, timeout=30)
    answer.raise_for_status()
    prompt_id = str(answer.json()["prompt_id"])
    try:
        wait_for(lambda: prompt_id in queue_of(url)[0], SETTLE, f"the blocker running on {url}")
        yield prompt_id
    finally:
        with contextlib.suppress(httpx.TransportError):  # (a server the test killed is gone)
            wait_for(lambda: _gone(url, prompt_id), SETTLE, f"the blocker gone from {url}")


def _gone(url: str, prompt_id: str) -> bool:
    """Ask ``url`` to drop and interrupt ``prompt_id``; whether it is off its queue now."""
    take_off(url, [prompt_id])
    running, pending = queue_of(url)
    return prompt_id not in running and prompt_id not in pending

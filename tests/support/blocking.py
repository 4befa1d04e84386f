"""A ComfyUI server (real or simulated) kept busy by a job of its own, so that a test's
prompts wait in its queue for exactly as long as the test needs — the event-based way to act
"while jobs are on the server" on a machine too loaded to catch them running."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from tests.support.graphs import sleep_graph


@contextlib.contextmanager
def blocked(url: str, color: int) -> Iterator[str]:
    """``url`` occupied by a job that runs until it is interrupted (or the server dies) for
    the ``with``; then that job is interrupted, by its prompt id (nothing else is). Yields
    its prompt id."""
    graph = sleep_graph(color, milliseconds=600_000, steps=6000)
    answer = httpx.post(f"{url}/prompt", json={"prompt": graph}, timeout=30)
    answer.raise_for_status()
    prompt_id = str(answer.json()["prompt_id"])
    try:
        yield prompt_id
    finally:
        with contextlib.suppress(httpx.HTTPError):  # (a server the test killed is gone)
            httpx.post(f"{url}/interrupt", json={"prompt_id": prompt_id}, timeout=30)

"""What a ComfyUI server (real or simulated) holds in its queue, read and changed over plain
HTTP as any client would: prompt ids running and waiting, whether it is idle, and taking
prompts off it (a test's own clean-up)."""

from __future__ import annotations

from collections.abc import Collection

import httpx


def queue_of(url: str) -> tuple[list[str], list[str]]:
    """The prompt ids ``url`` is running and has waiting (``GET /queue``)."""
    queue = httpx.get(f"{url}/queue", timeout=30).json()
    return [i[1] for i in queue["queue_running"]], [i[1] for i in queue["queue_pending"]]


def idle(url: str) -> bool:
    running, waiting = queue_of(url)
    return not (running or waiting)


def take_off(url: str, prompt_ids: Collection[str]) -> None:
    """Take ``prompt_ids`` off ``url``'s queue and interrupt the one of them running."""
    if prompt_ids:
        httpx.post(f"{url}/queue", json={"delete": list(prompt_ids)}, timeout=30)
        for prompt_id in prompt_ids:
            httpx.post(f"{url}/interrupt", json={"prompt_id": prompt_id}, timeout=30)

"""A pool of ComfyUI servers: which one gets the next job, and which are healthy.

Each server is kept *primed*: up to ``slots`` of our jobs on it at once (one running, the
rest queued behind it), so its GPU never idles between jobs. New work goes to the healthy
server with the fewest of our jobs; a server that fails is taken out until a health check
passes again. :func:`choose` is the pure policy; :class:`Pool` adds waiting for a slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Pool", "ServerState", "choose"]


@dataclass
class ServerState:
    url: str
    healthy: bool = True
    in_flight: int = 0
    done: int = 0
    failures: int = 0
    busy_seconds: float = 0.0  #: summed job execution time reported by the server
    last_used: float = 0.0
    down_since: float | None = None
    orphans: set[str] = field(default_factory=set)  #: prompt ids moved elsewhere while down

    @property
    def queued(self) -> int:
        return max(self.in_flight - 1, 0)


def choose(states: Mapping[str, ServerState], slots: int) -> str | None:
    """The healthy server with a free slot and the fewest of our jobs (then least recent)."""
    free = [s for s in states.values() if s.healthy and s.in_flight < slots]
    if not free:
        return None
    return min(free, key=lambda s: (s.in_flight, s.last_used, s.url)).url


class Pool:
    """Slots on several servers; ``acquire`` waits until a healthy server has one free."""

    def __init__(self, urls: list[str], slots: int) -> None:
        if not urls:
            raise ValueError("a pool needs at least one server")
        self.slots = slots
        self.states = {url: ServerState(url) for url in urls}
        self._changed = asyncio.Condition()

    async def acquire(self) -> str:
        async with self._changed:
            while True:
                url = choose(self.states, self.slots)
                if url is not None:
                    self.states[url].in_flight += 1
                    self.states[url].last_used = time.monotonic()
                    return url
                await self._changed.wait()

    async def take(self, url: str) -> None:
        """Count a job that is already on ``url`` (re-attached): no free slot is waited for."""
        async with self._changed:
            self.states[url].in_flight += 1

    async def release(self, url: str, *, busy: float = 0.0, ok: bool = True) -> None:
        async with self._changed:
            state = self.states[url]
            state.in_flight -= 1
            state.busy_seconds += busy
            if ok:
                state.done += 1
            self._changed.notify_all()

    async def mark_down(self, url: str) -> None:
        async with self._changed:
            state = self.states[url]
            state.failures += 1
            if state.healthy:
                state.healthy = False
                state.down_since = time.monotonic()
            self._changed.notify_all()

    async def mark_up(self, url: str) -> None:
        async with self._changed:
            state = self.states[url]
            state.healthy = True
            state.down_since = None
            self._changed.notify_all()

    def down(self) -> list[str]:
        return [u for u, s in self.states.items() if not s.healthy]

    def all_down_for(self) -> float:
        """Seconds since every server has been down (0 if any is up)."""
        if any(s.healthy for s in self.states.values()):
            return 0.0
        return time.monotonic() - max(
            s.down_since or time.monotonic() for s in self.states.values()
        )

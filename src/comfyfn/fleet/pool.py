"""A pool of ComfyUI servers: slots, health, and which waiting job goes to which server.

Each server is kept *primed*: up to its number of slots of our jobs on it at once (one
running, the rest queued behind it), so its GPU never idles between jobs. The number is fixed
(``prime`` + 1) or, with ``prime=None`` (the default), follows the job and turnaround times
measured on that server (:func:`~comfyfn.fleet.placement.prime_for`): two queued, more
behind short jobs.

Jobs ask for a slot with :meth:`Pool.request` and wait *in the pool*, so the pool sees them
together: whenever a slot frees, a job arrives or a server comes back, the policy
(:func:`~comfyfn.fleet.placement.assign`, pure) places waiting jobs — by priority, then on a
server that already holds the job's models (and prompt), then the emptiest server, then in
arrival order. With ``by_model=False`` it ignores models (shortest queue first, in order).
A server that fails is taken out until a health check passes again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from comfyfn.fleet.placement import ServerView, Waiting, assign, prime_for
from comfyfn.models import ModelSet

__all__ = ["Pool", "ServerState", "Want"]

_MEASURED = 20  #: recent job and turnaround times kept per server for the priming


@dataclass(frozen=True)
class Want:
    """What the pool knows of a job that waits for a slot."""

    models: ModelSet = frozenset()  #: model files it loads ((folder, name) pairs)
    prompt: str | None = None  #: what its text encoders encode (variations share it)
    priority: int = 0  #: higher first
    order: int = 0  #: arrival (lower first among equal priorities)


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
    tail: ModelSet | None = None  #: models it holds once our jobs on it have run
    tail_prompt: str | None = None
    executed: deque[float] = field(default_factory=lambda: deque(maxlen=_MEASURED))
    turnaround: deque[float] = field(default_factory=lambda: deque(maxlen=_MEASURED))
    #: the adaptive priming from the times above, until they change (every dispatch asks
    #: every server: 4-7 % of a runner's CPU at 64 servers when computed each time)
    primed: int | None = None

    @property
    def queued(self) -> int:
        return max(self.in_flight - 1, 0)


class Pool:
    """Slots on several servers; :meth:`request` a slot and await it."""

    def __init__(
        self,
        urls: list[str],
        prime: int | None = None,
        *,
        most: int = 8,
        by_model: bool = True,
    ) -> None:
        if not urls:
            raise ValueError("a pool needs at least one server")
        self.prime, self.most, self.by_model = prime, most, by_model
        self.states = {url: ServerState(url) for url in urls}
        self._waiting: dict[int, tuple[Waiting[int], asyncio.Future[str]]] = {}
        self._keys = itertools.count()

    # -- slots -----------------------------------------------------------------------------

    def slots(self, url: str) -> int:
        """Our jobs ``url`` may hold at once: fixed, or from its measured times."""
        if self.prime is not None:
            return self.prime + 1
        state = self.states[url]
        if state.primed is None:
            state.primed = prime_for(state.executed, state.turnaround, most=self.most)
        return state.primed + 1

    def open_slots(self) -> int:
        """Slots not taken on healthy servers."""
        return sum(
            max(0, self.slots(s.url) - s.in_flight) for s in self.states.values() if s.healthy
        )

    def free_slots(self) -> int:
        """Open slots, less the jobs already waiting for one."""
        waiting = sum(not future.done() for _, future in self._waiting.values())
        return max(0, self.open_slots() - waiting)

    def request(self, want: Want) -> asyncio.Future[str]:
        """Wait for a slot: the future gives the server's URL once the job is placed there
        (the slot is then taken). Give it back with :meth:`withdraw` if you stop waiting."""
        key = next(self._keys)
        models, prompt = (want.models, want.prompt) if self.by_model else (frozenset(), None)
        job = Waiting(key, models, prompt, want.priority, want.order)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[key] = (job, future)
        future.add_done_callback(lambda _: self._waiting.pop(key, None))
        self._dispatch()
        return future

    def withdraw(self, future: asyncio.Future[str]) -> None:
        """Stop waiting: a slot already given to ``future`` is freed again."""
        if future.done() and not future.cancelled():
            self.release(future.result(), ok=False)
        else:
            future.cancel()

    async def acquire(self, want: Want | None = None) -> str:
        """A slot, waited for (cancelling the wait gives it back)."""
        future = self.request(want or Want())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self.withdraw(future)
            raise

    def take(self, url: str, want: Want | None = None) -> None:
        """Count a job that is already on ``url`` (re-attached): no free slot is waited for."""
        state = self.states[url]
        state.in_flight += 1
        if want is not None and want.models:
            state.tail, state.tail_prompt = want.models, want.prompt

    def release(
        self, url: str, *, busy: float = 0.0, turnaround: float | None = None, ok: bool = True
    ) -> None:
        """A job left ``url``: ``busy`` seconds of execution there; ``turnaround`` seconds
        from its end on the server until we had its result (the priming measures both)."""
        state = self.states[url]
        state.in_flight -= 1
        state.busy_seconds += busy
        if ok:
            state.done += 1
            if turnaround is not None:
                state.executed.append(busy)
                state.turnaround.append(turnaround)
                state.primed = None
        self._dispatch()

    def _dispatch(self) -> None:
        """Place what the policy places now; the rest waits for the next change."""
        waiting = [job for job, future in self._waiting.values() if not future.done()]
        if not waiting:
            return
        views = [
            ServerView(
                s.url,
                max(0, self.slots(s.url) - s.in_flight) if s.healthy else 0,
                s.in_flight,
                s.tail,
                s.tail_prompt,
                s.healthy,
            )
            for s in sorted(self.states.values(), key=lambda s: s.last_used)
        ]
        for job, url in assign(views, waiting):  # the longest idle first, among equals
            state = self.states[url]
            state.in_flight += 1
            state.last_used = time.monotonic()
            if job.models:
                state.tail, state.tail_prompt = job.models, job.prompt
            self._waiting.pop(job.key)[1].set_result(url)

    # -- health ----------------------------------------------------------------------------

    def mark_down(self, url: str) -> None:
        state = self.states[url]
        state.failures += 1
        if state.healthy:
            state.healthy = False
            state.down_since = time.monotonic()

    def mark_up(self, url: str) -> None:
        state = self.states[url]
        state.healthy = True
        state.down_since = None
        self._dispatch()

    def down(self) -> list[str]:
        return [u for u, s in self.states.items() if not s.healthy]

    def all_down_for(self) -> float:
        """Seconds since every server has been down (0 if any is up)."""
        if any(s.healthy for s in self.states.values()):
            return 0.0
        return time.monotonic() - max(
            s.down_since or time.monotonic() for s in self.states.values()
        )

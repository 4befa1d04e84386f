"""The in-process event bus: job changes made by this process, delivered at once.

The worker publishes every change it makes to a job (claimed, submitted, progress, requeued,
final — the record as stored, with the output files of a success); the routes of the same
process that follow a job (server-sent events, ``/v1/images/generations`` waiting for its
image, ``DELETE`` waiting for a cancel) wake on it at once instead of polling the database.
The database stays the source of truth: a job another replica runs is never published
here, so followers still re-read the store now and then (:data:`FALLBACK_POLL`).

A :class:`Subscription` keeps only the latest update of its job (a slow reader skips
intermediate progress, never the current state), the latest sampler preview, and, if asked
for, a flag for "the queue changed" (a job left or re-entered the queue, so queued jobs'
positions may have moved).

Every update and preview gets an event id, ``<bus epoch>-<sequence>``, and the last
:data:`HISTORY` events of the :data:`HISTORY_JOBS` most recently active jobs are kept, so a
client that reconnects with ``Last-Event-ID`` gets what it missed (:meth:`JobBus.since`);
an id of another process (another replica, or before a restart) or one older than the
history is answered from the store instead. Previews are throttled per job to one per
:data:`PREVIEW_INTERVAL` seconds by the bus's clock, the latest winning; only a job's latest
preview is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from comfyfn.jobs.schema import TERMINAL, FileRecord, JobRecord

__all__ = [
    "FALLBACK_POLL",
    "HISTORY",
    "HISTORY_JOBS",
    "PREVIEW_INTERVAL",
    "BusEvent",
    "JobBus",
    "JobPreview",
    "JobUpdate",
    "Subscription",
]

#: seconds between store reads of a followed job (for jobs another replica runs)
FALLBACK_POLL = 1.0
#: events kept per job for reconnecting clients, and jobs kept
HISTORY = 64
HISTORY_JOBS = 1024
#: seconds between two previews of one job sent to followers (at most ~4 a second)
PREVIEW_INTERVAL = 0.25
#: the sequence part of an event id as this bus writes it
_SEQUENCE = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class JobUpdate:
    """A job as this process just stored it; for a success, its outputs' ``files`` (every
    output, still images first) and ``contents``: the still images' bytes as stored, so a
    waiting caller need not read them back."""

    job: JobRecord
    files: tuple[FileRecord, ...] = ()
    contents: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class JobPreview:
    """A sampler preview of a running job: the image as the server sent it."""

    job_id: str
    step: int | None
    data: bytes
    content_type: str


@dataclass(frozen=True)
class BusEvent:
    """An update or a preview as the bus numbered it (``id`` is the SSE event id)."""

    id: str
    seq: int
    item: JobUpdate | JobPreview


class Subscription:
    """What one follower of one job has not seen yet; see :meth:`JobBus.subscribe`."""

    def __init__(self, job_id: str, *, queue: bool) -> None:
        self.job_id, self.queue = job_id, queue
        self.latest: JobUpdate | None = None
        self.latest_id: str | None = None  #: the id the bus gave :attr:`latest`
        self.preview: BusEvent | None = None  #: the latest preview not yet taken
        self.queue_changed = False
        self._news = asyncio.Event()

    def _deliver(self, update: JobUpdate, event_id: str) -> None:
        self.latest, self.latest_id = update, event_id
        self._news.set()

    def _deliver_preview(self, event: BusEvent) -> None:
        self.preview = event
        self._news.set()

    def take_preview(self) -> BusEvent | None:
        preview, self.preview = self.preview, None
        return preview

    def _queue_changed(self) -> None:
        self.queue_changed = True
        self._news.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until something new was delivered (True) or ``timeout`` passes (False).
        Read :attr:`latest` and :attr:`queue_changed`; the news flag is cleared here."""
        if not self._news.is_set():
            with contextlib.suppress(TimeoutError):  # (not wait_for: see worker._sleep)
                async with asyncio.timeout(timeout):
                    await self._news.wait()
        news = self._news.is_set()
        self._news.clear()
        return news

    def take_queue_changed(self) -> bool:
        changed, self.queue_changed = self.queue_changed, False
        return changed


class JobBus:
    """Publish/subscribe of job updates inside one process (one event loop); ``clock``
    (seconds: ``time.monotonic``, the event loop's, unless a test gives its own) times the
    preview throttle."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._followers: dict[str, set[Subscription]] = {}
        self.epoch = os.urandom(4).hex()  #: this bus's part of every event id
        self._seq = itertools.count(1)
        self._history: OrderedDict[str, deque[BusEvent]] = OrderedDict()
        self._trimmed: dict[str, int] = {}  #: per job, the last seq dropped from its history
        self._preview_sent: dict[str, float] = {}  #: per job, when its last preview went out
        self._preview_waiting: dict[str, JobPreview] = {}  #: per job, the newest held back
        self._preview_timers: dict[str, asyncio.TimerHandle] = {}  #: per job, when it goes

    def publish(self, update: JobUpdate) -> None:
        event = self._record(update)
        for subscription in self._followers.get(update.job.id, ()):
            subscription._deliver(update, event.id)

    def preview(self, job_id: str, step: int | None, data: bytes, content_type: str) -> None:
        """A sampler preview of a running job, for its followers: one per
        :data:`PREVIEW_INTERVAL` seconds at most; one arriving sooner is held back until
        then, and replaced by any newer one (the latest wins). One arriving after the
        interval goes at once, with or without one held back (whose timer may be late)."""
        self._preview_waiting[job_id] = JobPreview(job_id, step, data, content_type)
        sent = self._preview_sent.get(job_id, -PREVIEW_INTERVAL)
        wait = sent + PREVIEW_INTERVAL - self._clock()
        if wait <= 0:
            self._send_preview(job_id)
        elif job_id not in self._preview_timers:
            loop = asyncio.get_running_loop()
            self._preview_timers[job_id] = loop.call_later(wait, self._send_preview, job_id)

    def _send_preview(self, job_id: str) -> None:
        self._cancel_timer(job_id)
        preview = self._preview_waiting.pop(job_id)
        self._preview_sent[job_id] = self._clock()
        event = self._record(preview)
        for subscription in self._followers.get(job_id, ()):
            subscription._deliver_preview(event)

    def _record(self, item: JobUpdate | JobPreview) -> BusEvent:
        """Number ``item`` and keep it in its job's history: an update without its output
        bytes (a replay needs the records only); a preview replacing the one before it,
        and none once the job is final."""
        job_id = item.job_id if isinstance(item, JobPreview) else item.job.id
        seq = next(self._seq)
        event = BusEvent(f"{self.epoch}-{seq}", seq, item)
        history = self._history.pop(job_id, None) or deque()
        final = isinstance(item, JobUpdate) and item.job.state in TERMINAL
        if isinstance(item, JobPreview) or final:
            history = deque(e for e in history if not isinstance(e.item, JobPreview))
        if final:
            self._forget_previews(job_id)
        kept = (
            event
            if isinstance(item, JobPreview)
            else BusEvent(event.id, seq, dataclasses.replace(item, contents=()))
        )
        history.append(kept)
        while len(history) > HISTORY:
            self._trimmed[job_id] = history.popleft().seq
        self._history[job_id] = history  # most recently active last
        while len(self._history) > HISTORY_JOBS:
            oldest, _ = self._history.popitem(last=False)
            self._trimmed.pop(oldest, None)
            self._forget_previews(oldest)
        return event

    def _forget_previews(self, job_id: str) -> None:
        self._cancel_timer(job_id)
        self._preview_sent.pop(job_id, None)
        self._preview_waiting.pop(job_id, None)

    def _cancel_timer(self, job_id: str) -> None:
        timer = self._preview_timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()

    def last_id(self, job_id: str) -> str:
        """The id of the job's latest event here (``<epoch>-0`` if there is none)."""
        history = self._history.get(job_id)
        return history[-1].id if history else f"{self.epoch}-0"

    def since(self, job_id: str, last_event_id: str) -> list[BusEvent] | None:
        """The job's events after ``last_event_id``, oldest first; None when the history
        cannot say (an id of another process, or older than what is kept): the caller then
        starts from the job's state in the store."""
        seen = self._sequence(last_event_id)
        if seen is None:
            return None
        history = self._history.get(job_id)
        if history is None:
            return [] if seen == 0 else None
        if seen < self._trimmed.get(job_id, 0):
            return None  # events after it were dropped (replaced previews do not count)
        return [e for e in history if e.seq > seen]

    def shown(self, job_id: str, last_event_id: str) -> tuple[str, float] | None:
        """The (state, progress) of the job's latest update up to ``last_event_id``: what a
        client that saw that event has shown (None when the history does not hold it)."""
        seen = self._sequence(last_event_id)
        updates = [
            e.item.job
            for e in self._history.get(job_id, ())
            if seen is not None and e.seq <= seen and isinstance(e.item, JobUpdate)
        ]
        return (updates[-1].state, updates[-1].progress) if updates else None

    def _sequence(self, event_id: str) -> int | None:
        """The sequence number of an event id this bus issued (None for any other)."""
        epoch, _, number = event_id.partition("-")
        if epoch != self.epoch or not _SEQUENCE.fullmatch(number):
            return None  # not an id this bus issued ("²" and "٣" are digits to str.isdigit)
        return int(number)

    def queue_changed(self) -> None:
        """A job left the queue or re-entered it: queued jobs' positions may have moved."""
        for followers in self._followers.values():
            for subscription in followers:
                if subscription.queue:
                    subscription._queue_changed()

    @contextlib.contextmanager
    def subscribe(self, job_id: str, *, queue: bool = False) -> Iterator[Subscription]:
        """Follow ``job_id`` for the ``with`` block (and, with ``queue``, the queue)."""
        subscription = Subscription(job_id, queue=queue)
        self._followers.setdefault(job_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            followers = self._followers[job_id]
            followers.discard(subscription)
            if not followers:
                del self._followers[job_id]

    def followed(self) -> int:
        """How many subscriptions are open (for tests and metrics)."""
        return sum(len(f) for f in self._followers.values())

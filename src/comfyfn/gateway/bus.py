"""The in-process event bus: job changes made by this gateway process, delivered at once.

The worker publishes every change it makes to a job (claimed, submitted, progress, requeued,
final — the record as stored, with the output files of a success); the routes of the same
process that follow a job (server-sent events, ``/v1/images/generations`` waiting for its
image, ``DELETE`` waiting for a cancel) wake on it at once instead of polling the database.
The database stays the source of truth: a job another replica runs is never published
here, so followers still re-read the store now and then (:data:`FALLBACK_POLL`).

A :class:`Subscription` keeps only the latest update of its job (a slow reader skips
intermediate progress, never the current state) and, if asked for, a flag for "the queue
changed" (a job left or re-entered the queue, so queued jobs' positions may have moved).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from comfyfn.gateway.schema import FileRecord, JobRecord

__all__ = ["FALLBACK_POLL", "JobBus", "JobUpdate", "Subscription"]

#: seconds between store reads of a followed job (for jobs another replica runs)
FALLBACK_POLL = 1.0


@dataclass(frozen=True)
class JobUpdate:
    """A job as this process just stored it; for a success, its outputs' ``files`` and
    their ``contents`` (the bytes as stored, so a waiting caller need not read them back)."""

    job: JobRecord
    files: tuple[FileRecord, ...] = ()
    contents: tuple[bytes, ...] = ()


class Subscription:
    """What one follower of one job has not seen yet; see :meth:`JobBus.subscribe`."""

    def __init__(self, job_id: str, *, queue: bool) -> None:
        self.job_id, self.queue = job_id, queue
        self.latest: JobUpdate | None = None
        self.queue_changed = False
        self._news = asyncio.Event()

    def _deliver(self, update: JobUpdate) -> None:
        self.latest = update
        self._news.set()

    def _queue_changed(self) -> None:
        self.queue_changed = True
        self._news.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until something new was delivered (True) or ``timeout`` passes (False).
        Read :attr:`latest` and :attr:`queue_changed`; the news flag is cleared here."""
        if not self._news.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), timeout)
        news = self._news.is_set()
        self._news.clear()
        return news

    def take_queue_changed(self) -> bool:
        changed, self.queue_changed = self.queue_changed, False
        return changed


class JobBus:
    """Publish/subscribe of job updates inside one process (one event loop)."""

    def __init__(self) -> None:
        self._followers: dict[str, set[Subscription]] = {}

    def publish(self, update: JobUpdate) -> None:
        for subscription in self._followers.get(update.job.id, ()):
            subscription._deliver(update)

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

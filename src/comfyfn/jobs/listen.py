"""Waking idle workers the moment a job enters the queue (PostgreSQL ``LISTEN``/``NOTIFY``).

The store sends ``NOTIFY cfn_jobs`` in the transaction that queues a job (created, handed
back, requeued), so it arrives once that commits. A :class:`QueueListener` holds one
autocommit connection of its own in a thread, ``LISTEN``\\ s, and calls ``wake`` for each
notification; if the connection fails it reconnects with backoff (the worker's polling goes
on meanwhile, so nothing waits longer than one poll). SQLite has no notifications: workers
poll (the worker's ``IDLE_POLL``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import make_url

from comfyfn.jobs._runners import NOTIFY_CHANNEL

__all__ = ["QueueListener"]

log = logging.getLogger("comfyfn.jobs")
_CHECK_STOP = 0.5  #: seconds between looks at the stop flag while no notification comes


class QueueListener:
    """Calls ``wake()`` (from its own thread) whenever a job is queued in the PostgreSQL
    database at ``url`` (a SQLAlchemy URL)."""

    def __init__(self, url: str, wake: Callable[[], None]) -> None:
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.wake = wake
        self.listening = threading.Event()  #: set while LISTEN is in force
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cfn-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (returns within :data:`_CHECK_STOP` seconds or so)."""
        self._stop.set()
        self._thread.join(timeout=_CHECK_STOP * 4)

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                self._listen()
                delay = 0.2
            except Exception as exc:  # the database went away: reconnect, keep polling
                self.listening.clear()
                log.warning("job notifications interrupted (%s); polling meanwhile", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.listening.set()
            self.wake()  # jobs queued while we were not listening
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=_CHECK_STOP):
                    self.wake()

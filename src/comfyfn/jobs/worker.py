"""Running the store's jobs on the fleet: claim, run or re-attach, store, notify.

Jobs live in the store, not in memory: a worker claims one (atomically, so two gateway
replicas never run the same job), records the server and its prompt id *before* submitting,
and heartbeats while it runs. A job whose worker died (no heartbeat) is claimed by another
worker or by the restarted one and re-attached by prompt id on its server — or run again if
the server lost it. On a graceful stop the worker hands its jobs back at once (they stay on
their servers and are re-attached). Servers, slots, health and moving jobs off failed
servers are the fleet's (:mod:`comfyfn.fleet`), shared with the batch runner. The jobs are
API jobs, which the gateway gives the worker the means to bind and store
(:class:`~comfyfn.jobs.hooks.ApiJobs`), and batch rows, which carry both with them.

The gateway's routes hand new jobs to :meth:`Worker.submit`: with a slot free and no
job queued ahead, a job is created already claimed by this worker and starts at once (no claim
round trip); else it is queued and the claim loop woken. The claim loop otherwise sleeps until
a slot frees up or :data:`IDLE_POLL` passes (jobs queued by other replicas, stale ones).
Every change the worker stores is also published on the process's :class:`JobBus`, so the
routes following a job wake at once. Progress goes to the bus at every step and to the store
at most every :data:`PROGRESS_WRITE_INTERVAL` seconds (what other replicas see).

The store can fail (a database restart, a lock held too long): the claim loop logs and backs
off, ``healthy()`` is False meanwhile (``/readyz`` answers 503), a job's final state is
written as soon as the database is back, and progress updates are skipped while it is not.

Many machines: the same worker runs without the HTTP app as ``comfyfn worker`` (and as
``comfyfn batch --work``, for one batch's rows). It
registers itself in the store at every heartbeat (its servers, the models loaded on each,
free slots), claims queued jobs whose models one of its servers holds ahead of others of the
same priority, and on PostgreSQL wakes on ``NOTIFY`` (:mod:`comfyfn.jobs.listen`). Every write names
the claim it holds (fencing, :mod:`comfyfn.jobs.store`): a job taken over by another
worker (this one paused past ``stale_after``) is dropped quietly — no write, no webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from comfyfn._tasks import cancel_and_wait
from comfyfn.errors import ComfyError
from comfyfn.fleet import (
    Fleet,
    FleetLike,
    FleetSettings,
    State,
    Ticket,
)
from comfyfn.jobs._job_life import CANCELLED, DB_ERRORS, PROGRESS_WRITE_INTERVAL, JobLife
from comfyfn.jobs.bus import JobBus
from comfyfn.jobs.hooks import ApiJobs, NoMetrics, Notify, WorkerMetrics, WorkerSettings
from comfyfn.jobs.listen import QueueListener
from comfyfn.jobs.schema import Claim, JobRecord, StaleClaim, models_key
from comfyfn.jobs.store import Store
from comfyfn.storage import Storage
from comfyfn.workflow import Workflow

__all__ = ["IDLE_POLL", "PROGRESS_WRITE_INTERVAL", "Worker"]

log = logging.getLogger("comfyfn.jobs")

IDLE_POLL = 0.5  #: seconds between claims while the queue is empty (other replicas' jobs)
WITHDRAW_SECONDS = 5.0  #: at most this long, on shutdown, to take our waiting prompts off servers
#: a loop that failed twice within this many seconds makes the worker unhealthy (``/readyz``
#: 503) until the older failure is this old; a loop that ran this long before failing starts
#: again after the shortest pause
LOOP_FAILURE_WINDOW = 60.0
_RESTART_PAUSE = 1.0  #: seconds before a failed loop starts again (doubling while it fails)


class Worker(JobLife):
    """Claims the store's jobs and runs them on its servers (``fleet``: by default one made
    of ``settings.servers``). ``api`` lets it run API jobs, ``metrics`` counts, ``notify``
    delivers webhooks; ``only_batch`` limits its claims to that batch's rows."""

    def __init__(
        self,
        store: Store,
        settings: WorkerSettings,
        bus: JobBus | None = None,
        *,
        api: ApiJobs | None = None,
        metrics: WorkerMetrics | None = None,
        notify: Notify | None = None,
        fleet: FleetLike | None = None,
        only_batch: str | None = None,
    ) -> None:
        self.store, self.settings, self.api = store, settings, api
        self.bus = bus if bus is not None else JobBus()
        self.metrics: WorkerMetrics = metrics if metrics is not None else NoMetrics()
        self.notify = notify
        self.targets: dict[str, Storage] = {}
        self.only_batch = only_batch  #: claim only this batch's jobs (``comfyfn batch --work``)
        self.fleet: FleetLike = fleet or Fleet(
            settings.servers,
            FleetSettings(
                prime=settings.prime,
                http_timeout=settings.http_timeout,
                job_timeout=settings.job_timeout,
                health_interval=1.0,
                comfy_org_key=settings.comfy_org_key,
            ),
        )
        self.running: dict[str, asyncio.Task[None]] = {}
        self.held: dict[str, Claim] = {}  #: the claim this worker holds on each of its jobs
        self.tickets: dict[str, Ticket] = {}
        self.db_ok = True
        self._records: dict[str, JobRecord] = {}  #: the latest stored form of each held job
        self._progress_written: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self._created = False  #: a route of this process queued a job since the last claim
        self._reserved = 0  #: slots held for jobs being created claimed (:meth:`submit`)
        self._starting: set[str] = set()  #: jobs started here, waiting for their slot
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False  #: set by :meth:`stop`: the claim loop ends at its next look
        self._stopped: asyncio.Task[None] | None = None  #: :meth:`stop`'s work, done once
        self._notifications: set[asyncio.Task[None]] = set()
        self._loop_failures: dict[str, list[float]] = {}  #: each loop's last two failures
        self.listener: QueueListener | None = None

    async def start(self) -> None:
        for index, url in enumerate(self.fleet.pool.states):  # /metrics names them by index
            log.info("ComfyUI server %d: %s", index, url)
        await self.fleet.__aenter__()
        await self.fleet.probe()  # readiness must be true from the start, not after a failure
        if self.store.dialect == "postgresql":
            loop = asyncio.get_running_loop()

            def wake() -> None:
                loop.call_soon_threadsafe(self.job_created)

            self.listener = QueueListener(self.store.url, wake)
            self.listener.start()
        with contextlib.suppress(*DB_ERRORS):  # else at the first heartbeat
            await asyncio.to_thread(self._register)
        self._tasks = [
            asyncio.create_task(self._kept_running(self._claim_loop, "claim")),
            asyncio.create_task(self._kept_running(self._heartbeat_loop, "heartbeat")),
        ]

    async def stop(self) -> None:
        """Stop claiming; hand every held job back to the queue, then close. A job running
        on its server stays there (whoever claims it next and drives that server
        re-attaches); one still waiting in its server's queue is taken out of it and handed
        back without its prompt, so the next claimer submits it afresh rather than this
        host's server running it for nobody. Stopping twice stops once: every caller returns
        when the hand-back is done; a caller that is cancelled meanwhile does not cut it short."""
        if self._stopped is None:
            self._stopping = True  # before anything else runs: no claim after this call
            self._wakeup.set()
            self._stopped = asyncio.create_task(self._stop())
        try:
            await asyncio.shield(self._stopped)
        except asyncio.CancelledError:
            # the caller's cancellation waits for the hand-back: left running, it would be
            # cancelled with every other task as asyncio.run ends (a second Ctrl-C)
            await asyncio.wait([self._stopped])
            raise

    async def _stop(self) -> None:
        await self._stop_loops()
        held = {job_id: self.held[job_id] for job_id in self.running if job_id in self.held}
        tickets = {job_id: self.tickets[job_id] for job_id in held if job_id in self.tickets}
        with contextlib.suppress(Exception):  # (a job's own error is its own, not the stop's)
            await cancel_and_wait(*self.running.values())
        withdrawn = await self.fleet.withdraw_waiting(tickets.values(), WITHDRAW_SECONDS)
        for job_id, claim in held.items():
            ticket = tickets.get(job_id)
            forget = ticket is not None and ticket.prompt_id in withdrawn
            try:
                await asyncio.to_thread(self.store.release_job, job_id, claim, forget=forget)
                log.warning("shutting down: handed job %s back to the queue", job_id)
            except DB_ERRORS as exc:
                log.warning("could not hand job %s back (%s); it is taken over later", job_id, exc)
        with contextlib.suppress(*DB_ERRORS):
            await asyncio.to_thread(self.store.unregister_worker, self.settings.worker_id)
        if self.listener is not None:
            await asyncio.to_thread(self.listener.stop)
        for task in self._notifications:
            task.cancel()
        await self.fleet.__aexit__(None, None, None)

    async def _stop_loops(self) -> None:
        """End the claim and heartbeat loops. The claim loop is asked, not cancelled: a
        claim under way is committed by its thread whatever happens here, so its jobs are
        started (and handed back by :meth:`stop`) rather than left claimed by nobody until
        they go stale. It is cancelled only if the store holds it past
        :data:`WITHDRAW_SECONDS`."""
        if not self._tasks:
            return
        claim_loop, *others = self._tasks
        _, late = await asyncio.wait([claim_loop], timeout=WITHDRAW_SECONDS)
        if late:
            log.warning("shutting down: the store holds a claim; its jobs are taken over later")
        await cancel_and_wait(*others, *late)

    def healthy(self) -> bool:
        """Able to work: the store answers, at least one ComfyUI server is up, and neither the
        claim nor the heartbeat loop keeps failing (:meth:`loops_failing`)."""
        return self.db_ok and self.fleet.healthy() and not self.loops_failing()

    def loops_failing(self) -> list[str]:
        """The loops (``claim``, ``heartbeat``) that failed twice within the last
        :data:`LOOP_FAILURE_WINDOW` seconds (one failure is logged and counted, and the loop
        runs again a second later: no reason to turn traffic away)."""
        now = time.monotonic()
        return [
            name
            for name, failures in self._loop_failures.items()
            if len(failures) == 2 and now - failures[0] < LOOP_FAILURE_WINDOW
        ]

    def job_created(self) -> None:
        """A job was queued by this process: claim now, not at the next poll."""
        self._created = True
        self._wakeup.set()

    async def submit(self, **job: Any) -> JobRecord:
        """Store a new job (:meth:`Store.create_job`'s arguments). With a slot free here and
        no job queued ahead, it is created claimed by this worker and starts at once; else it
        is queued and the claim loop woken. Once stored, the job is started or queued even if
        the caller is cancelled meanwhile. Only a worker given :class:`ApiJobs` takes them."""
        if self.api is None:
            raise ComfyError("this worker runs batch rows only: it was given no API jobs")
        reserved = not self._stopping and self._free_slots() > 0 and self.healthy()
        if reserved:
            self._reserved += 1  # until the store answers: no claim takes this slot
        claim_for = self.settings.worker_id if reserved else None
        models = self.api.models(job["workflow"]) if self.api is not None else None
        stored = asyncio.ensure_future(
            asyncio.to_thread(self.store.create_job, claim_for=claim_for, models=models, **job)
        )
        stored.add_done_callback(functools.partial(self._submitted, reserved))
        record, _ = await asyncio.shield(stored)
        return record

    def _submitted(self, reserved: bool, stored: asyncio.Future[tuple[JobRecord, bool]]) -> None:
        if reserved:
            self._reserved -= 1
        if stored.cancelled() or stored.exception() is not None:
            self._wakeup.set()  # the held slot is free again
            return
        job, created = stored.result()
        if created and job.claimed_by == self.settings.worker_id:
            self._start(job)
        else:  # queued behind others (or an earlier job of the same idempotency key)
            self.job_created()

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job this worker runs: interrupt or dequeue it on its server (the job then
        ends ``cancelled``); before it reaches a server, stop it here. False if not ours.

        A job with a prompt id is on its server, or on its way there (the POST under way:
        the server answers "absent", and the job's follower cancels it once it lands), or
        just done there: its follower sees how it ends. If the server does not answer the
        cancel, the job is followed on and the cancel asked again at the next heartbeat
        (the store keeps the request): cut off here, its prompt would run for nobody."""
        task, ticket = self.running.get(job_id), self.tickets.get(job_id)
        if task is None:
            return False
        if ticket is None or not ticket.prompt_id:
            task.cancel()
            return True
        try:
            await self.fleet.cancel(ticket)
        except ComfyError as exc:
            log.warning(
                "job %s: its server did not take the cancel (%s); asking again", job_id, exc
            )
        return True

    # -- loops -----------------------------------------------------------------------------

    async def _kept_running(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``loop`` until it returns (the claim loop, on stop); a bug that ends it is
        logged and the loop started again after a pause (1 s, doubling to at most 30 s while
        it keeps failing within a minute), never left to end quietly: a worker whose claim
        loop died would look alive and claim nothing. One that keeps failing makes the worker
        unhealthy (:meth:`loops_failing`)."""
        pause = _RESTART_PAUSE
        while True:
            began = time.monotonic()
            try:
                await loop()
                return
            except Exception:
                log.exception("the worker's %s loop failed; starting it again", name)
                self.metrics.failed("InternalError")
                failed = time.monotonic()
                self._loop_failures[name] = [*self._loop_failures.get(name, [])[-1:], failed]
                if failed - began > LOOP_FAILURE_WINDOW:
                    pause = _RESTART_PAUSE
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def _claim_loop(self) -> None:
        """Claim as many jobs as there are free slots, in one transaction, whenever the
        queue may hold some: the last claim got all it asked for, a route queued one, or
        :data:`IDLE_POLL` passed since the last look (other replicas' jobs)."""
        more, looked = True, -IDLE_POLL
        while not self._stopping:
            self._wakeup.clear()  # before looking: a wake-up from now on is never lost
            free = self._free_slots()
            wait = max(0.0, looked + IDLE_POLL - time.monotonic())
            if not free or not (more or self._created or wait == 0):
                await self._sleep(wait if free else IDLE_POLL)
                continue
            self._created, looked = False, time.monotonic()
            try:
                jobs = await asyncio.to_thread(
                    self.store.claim_jobs,
                    self.settings.worker_id,
                    limit=free,
                    stale_after=self.settings.stale_after,
                    models=self._loaded_models(),
                    batch=self.only_batch,
                    batch_rows_only=self.api is None,
                )
            except DB_ERRORS as exc:
                self._db_failed(exc)
                await self._sleep(1.0)
                continue
            self.db_ok = True
            more = len(jobs) == free
            for job in jobs:
                self._start(job)

    def _loaded_models(self) -> set[str]:
        """The digests of the model sets our servers hold (jobs needing them go first)."""
        tails = (state.tail for state in self.fleet.pool.states.values() if state.healthy)
        return {key for key in map(models_key, (t for t in tails if t)) if key}

    def _free_slots(self) -> int:
        """Slots free for new jobs on healthy servers (less those reserved or being taken)."""
        return max(0, self.fleet.pool.open_slots() - self._reserved - len(self._starting))

    def _start(self, job: JobRecord) -> None:
        """Run a claimed job (or end it at once: cancelled before it ran, unbindable)."""
        self.bus.queue_changed()
        if job.id in self.running and job.claim is not None:
            # ours, re-claimed after our heartbeats failed past stale_after: the task that
            # runs it goes on under the new claim (a second task would run it twice)
            self.held[job.id] = job.claim
            self._stored(job)
            return
        if job.cancel_requested and not job.prompt_id:  # cancelled before it ever ran
            self._spawn(job, self._finish(job, State.CANCELLED, time.monotonic(), error=CANCELLED))
            return
        self._starting.add(job.id)  # counts as a taken slot until it has one
        self._spawn(job, self._bind_and_run(job))

    async def _bind_and_run(self, job: JobRecord) -> None:
        """Bind the job (reading its input images from storage), then run it; a job that
        cannot be bound fails at once, naming why."""
        workflow = await self._bind(job)
        if not isinstance(workflow, Workflow):
            self._starting.discard(job.id)
            await self._finish(job, State.FAILED, time.monotonic(), error=workflow)
            return
        ticket = Ticket(workflow, job.prompt_id, job.server, job.attempts, job.priority)
        self.tickets[job.id] = ticket
        await self._run(job, ticket)

    def _spawn(self, job: JobRecord, work: Coroutine[Any, Any, None]) -> None:
        if job.claim is not None:
            self.held[job.id] = job.claim
        task = asyncio.create_task(self._fenced(job.id, work))
        self.running[job.id] = task
        self._stored(job)
        task.add_done_callback(lambda _: self._forget_task(job.id))

    @staticmethod
    async def _fenced(job_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Run a job's work; if another worker took the job over meanwhile, drop it quietly."""
        try:
            await work
        except StaleClaim:
            log.warning("job %s was taken over by another worker: dropped here", job_id)

    def _forget_task(self, job_id: str) -> None:
        self.held.pop(job_id, None)
        self._starting.discard(job_id)
        self.running.pop(job_id, None)
        self.tickets.pop(job_id, None)
        self._records.pop(job_id, None)
        self._progress_written.pop(job_id, None)
        self._wakeup.set()  # a slot is free: claim the next job now

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
        # that arrives as the event is set, and the loop would run on past stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            held = {job_id: claim.number for job_id, claim in self.held.items()}
            try:
                lost = await asyncio.to_thread(self.store.heartbeat, self.settings.worker_id, held)
                asked = await asyncio.to_thread(self.store.cancel_requests, list(self.running))
                await asyncio.to_thread(self._register)
            except DB_ERRORS as exc:
                self._db_failed(exc)
                continue
            self.db_ok = True
            for job_id in lost & set(self.running):  # taken over while we were away
                log.warning("job %s was taken over by another worker: dropped here", job_id)
                self.held.pop(job_id, None)  # no write of ours reaches it any more
                self.running[job_id].cancel()
            for job_id in asked - lost:  # cancels asked through another replica
                await self.cancel(job_id)
            for index, state in enumerate(self.fleet.pool.states.values()):
                self.metrics.in_flight(index, state.in_flight)

    def _register(self) -> None:
        """This worker's row in the runners' registry (``comfyfn workers``)."""
        servers = [
            {
                "url": url,
                "up": state.healthy,
                "models": sorted(name for _, name in state.tail or ()),
                "in_flight": state.in_flight,
            }
            for url, state in self.fleet.pool.states.items()
        ]
        self.store.register_worker(
            self.settings.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            free_slots=self._free_slots(),
            servers=servers,
        )

"""Running a batch on the fleet: durable, resumable, results as they finish.

Rows are read one at a time and only as fast as the servers take jobs, so memory stays flat
however long the input. Every job's fate is in ``manifest.sqlite`` in the output folder;
running the same batch again skips finished jobs (after checking their files), re-attaches
to jobs still queued or running on a server (by prompt id: they are not run again) and does
the rest. Servers, slots, re-attaching and moving jobs off failed servers are the fleet's
(:mod:`comfyfn.fleet`, shared with the gateway); this module records and reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import string
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyfn._tasks import cancel_and_wait
from comfyfn.batch.jobs import (
    Job,
    JobResult,
    aprepare,
    output_folders,
    save_outputs,
    store_outputs,
    stored_problem,
)
from comfyfn.batch.manifest import Manifest, ManifestError, folder_problem
from comfyfn.batch.rows import Row, RowError
from comfyfn.errors import ConfigError
from comfyfn.fleet import (
    CancelledBy,
    Done,
    Fleet,
    FleetSettings,
    Lost,
    Moved,
    Outcome,
    Pool,
    Slot,
    State,
    settle,
)
from comfyfn.storage import Storage, StorageError
from comfyfn.workflow import Workflow

if TYPE_CHECKING:
    from comfyfn.jobs import WorkerSettings

__all__ = ["Batch", "BatchSettings", "template_variables"]

log = logging.getLogger("comfyfn.batch")
_END = object()
#: seconds :meth:`Batch.abandon` gives the servers to answer the cancellation of running jobs
ABANDON_GRACE = 2.0


@dataclass(frozen=True)
class BatchSettings:
    #: our jobs queued on each server beyond the running one; None: adapt to the measured
    #: job and turnaround times (see :class:`comfyfn.fleet.FleetSettings`)
    prime: int | None = None
    retries: int = 3  #: times a job is moved to another server after a server failure
    #: for partner (paid cloud) nodes; None: $COMFY_ORG_API_KEY, read by each client at use
    comfy_org_key: str | None = field(default=None, repr=False)
    http_timeout: float = 10.0
    job_timeout: float | None = None  #: a job running longer counts as a server failure
    give_up_after: float = 600.0  #: with every server down this long (mid-run), rows fail
    health_interval: float = 0.5
    variables: frozenset[str] = field(default_factory=frozenset)
    #: rows read ahead and waiting for a slot, so the pool can choose among them (by
    #: priority and loaded models); memory stays bounded by it
    lookahead: int = 32
    by_model: bool = True  #: place jobs where their models are loaded

    def __post_init__(self) -> None:
        for name in ("prime", "retries", "lookahead"):
            value = getattr(self, name)
            if value is None and name == "prime":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a whole number ≥ 0, not {value!r}")
        if self.http_timeout <= 0 or self.give_up_after < 0:
            raise ConfigError("http_timeout must be > 0 and give_up_after ≥ 0")

    def fleet(self) -> FleetSettings:
        return FleetSettings(
            prime=self.prime,
            by_model=self.by_model,
            http_timeout=self.http_timeout,
            job_timeout=self.job_timeout,
            health_interval=self.health_interval,
            comfy_org_key=self.comfy_org_key,
        )

    def worker(self, servers: Sequence[str], worker_id: str) -> WorkerSettings:
        """A worker of the batch's rows on ``servers`` (``comfyfn batch --db --work``),
        placing and retrying them as these settings say. Not carried over: ``lookahead``
        and ``by_model`` (the store's claim orders the jobs), ``health_interval`` (a
        worker's own) and ``give_up_after`` (a worker waits for its servers)."""
        from comfyfn.jobs import WorkerSettings  # (the job store: not for a batch run here)

        return WorkerSettings(
            servers=tuple(servers),
            worker_id=worker_id,
            prime=self.prime,
            job_timeout=self.job_timeout,
            http_timeout=self.http_timeout,
            retries=self.retries,
            comfy_org_key=self.comfy_org_key,
        )


class Batch:
    """Rows → images on disk over several servers: iterate ``results()`` (async), or pass
    the batch to :func:`comfyfn.batch.run_batch` (blocking, writes the report).

    Args:
        rows: :class:`~comfyfn.batch.rows.Row` items (or RowErrors), read lazily.
        output: the output folder (images, ``manifest.sqlite``, ``index.html``); ``None``
            keeps nothing on disk and puts each Generation in its result instead.
        servers: ComfyUI URLs (default: the usual server resolution, one server).
        workflow: a built-in name, a file or a Workflow (default Z-Image-Turbo).
        storage: where the images go instead of the output folder (an object store, see
            :func:`comfyfn.storage.open_storage`); the output folder then keeps the
            manifest and the report only. A resumed run checks a done job's files with
            ``exists()`` and does not store them again.
    """

    def __init__(
        self,
        rows: Iterable[Row | RowError],
        output: str | Path | None,
        *,
        servers: Sequence[str],
        workflow: str | Path | Mapping[str, Any] | Workflow = "zimage-turbo",
        settings: BatchSettings | None = None,
        on_event: Callable[[str, Any], None] | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.rows = rows
        self.output = Path(output) if output is not None else None
        self.storage = storage
        self.workflow_source = workflow
        self.settings = settings or BatchSettings()
        self.on_event = on_event or (lambda _kind, _data: None)
        self.fleet = Fleet(servers, self.settings.fleet())
        self.servers = self.fleet.servers  #: as shown and recorded: no credentials
        self.started = time.monotonic()
        self._stop_requested = False
        self._cancel_running = False
        self._fatal: BaseException | None = None
        self._tasks: dict[asyncio.Task[None], Job] = {}  #: waiting for a slot, or running
        self._running: dict[asyncio.Task[None], Job] = {}
        #: tasks started and not yet placed: counted from their start, so rows are read
        #: only ``lookahead`` ahead of the slots (a task that has not run yet still waits)
        self._unplaced: set[asyncio.Task[None]] = set()
        self._placed = asyncio.Event()  #: a waiting task got its slot (or gave up)
        self._leaving: asyncio.Future[None] | None = None

    @property
    def pool(self) -> Pool:
        return self.fleet.pool

    # -- public ----------------------------------------------------------------------------

    def stop(self, *, cancel_running: bool = False) -> None:
        """Stop taking rows; running jobs finish — or, with ``cancel_running``, are cancelled
        on their servers and left pending, so the next run does them. Safe before
        :meth:`results`. :meth:`abandon` stops at once."""
        self._stop_requested = True
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        if cancel_running and not self._cancel_running:
            self._cancel_running = True
            if stop is not None:
                self._canceller = asyncio.ensure_future(self._cancel_on_servers())

    def abandon(self) -> None:
        """Stop at once (a second Ctrl-C): take no more rows, ask the servers to cancel the
        running jobs (waiting at most :data:`ABANDON_GRACE` seconds for their answers) and
        stop following them. Their rows stay ``submitted``: the next run re-attaches to
        them, and runs again those that were cancelled."""
        running = list(self._running.items())
        self.stop()
        self._cancel_running = True
        for task, _ in running:
            task.cancel()
        jobs = [job for _, job in running]
        if jobs and self._leaving is None:
            self._leaving = asyncio.ensure_future(self._cancel_quickly(jobs))

    async def _cancel_quickly(self, jobs: list[Job]) -> None:
        with contextlib.suppress(TimeoutError):  # (asyncio.timeout: wait_for on 3.11 can
            async with asyncio.timeout(ABANDON_GRACE):  # swallow a cancellation)
                await self.fleet.cancel_all(j.ticket for j in jobs)

    async def _cancel_on_servers(self) -> None:
        """Cancel every running job on its server; stop following those that do not end
        within the HTTP timeout (their server is not answering)."""
        jobs = dict(self._running)
        await self.fleet.cancel_all(job.ticket for job in jobs.values())
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=self.settings.http_timeout)
            for task in late:
                task.cancel()

    async def results(self) -> AsyncIterator[JobResult]:
        """Run the batch, yielding each row's result as it is known."""
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        self._results: asyncio.Queue[Any] = asyncio.Queue()
        self.manifest = Manifest(
            self.output / "manifest.sqlite" if self.output is not None else ":memory:"
        )
        try:
            async with self.fleet:
                self.fleet.on_health = self._health_changed
                driver = asyncio.create_task(self._drive())
                try:
                    while (item := await self._results.get()) is not _END:
                        yield item
                    await driver
                finally:
                    if not driver.done():
                        await cancel_and_wait(driver)
                    if self._leaving is not None:
                        await self._leaving  # the cancellations, while the clients are open
        finally:
            self.manifest.close()
        if self._fatal is not None:
            raise self._fatal

    # -- driving ---------------------------------------------------------------------------

    def _health_changed(self, url: str, up: bool) -> None:
        self.on_event("server_up" if up else "server_down", url)

    def _emit(self, result: JobResult) -> None:
        self._results.put_nowait(result)
        self.on_event("result", result)

    async def _drive(self) -> None:
        self._retry: deque[Job] = deque()
        try:
            wf = await self.fleet.workflow(
                self.workflow_source, give_up_after=self.settings.give_up_after, stop=self._stop
            )
            if wf is None:  # stopped while waiting for a server
                return
            for item in self.rows:
                if self._stop.is_set():
                    break
                self._start_retries()
                job = await self._admit(wf, item)
                if job is not None:
                    await self._room()
                    self._start(job)
            while self._tasks or (self._retry and not self._stop.is_set()):
                self._start_retries()
                if self._tasks:
                    await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Leaving early (an error, or the consumer stopped): cancel running jobs on their
            # servers while the clients are still open; they go back to pending.
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            for job in self._retry:  # moved off a failed server, not yet started again
                self.manifest.requeued(job.key, block=False)
            try:  # the writes not awaited (rows added, failed, requeued) on disk too
                await self.manifest.flush()
            except ManifestError as exc:
                self._abort(exc)
            self._results.put_nowait(_END)

    async def _admit(self, wf: Workflow, item: Row | RowError) -> Job | None:
        """Record the row; a job to run, or None (invalid, or finished by an earlier run)."""
        prepared = (
            await aprepare(wf, item, variables=self.settings.variables)
            if isinstance(item, Row)
            else item
        )
        if isinstance(prepared, RowError):
            self._invalid(prepared)
            return None
        job = prepared
        record = self.manifest.get(job.key)
        if record is not None and record.state == "done":
            damaged = await self._damaged(record.checks)
            if damaged is None:
                self._emit(
                    JobResult(
                        job.key,
                        job.row,
                        job.label,
                        "skipped",
                        tuple(record.files),
                        server=record.server,
                        seconds=record.seconds,
                    )
                )
                return None
            log.warning("%s: %s; making it again", job.label, damaged)
            self.manifest.redo(job.key, block=False)
        job.ticket.priority = item.priority if isinstance(item, Row) else 0
        if record is not None and record.state == "submitted":
            job.ticket.prompt_id, job.ticket.server = record.prompt_id, record.server
            return job
        # not awaited: committed before (or with) its ``submitted``, which is
        self.manifest.add(job.key, job.row, job.label, job.stem, job.values, block=False)
        return job

    async def _damaged(self, checks: list[dict[str, Any]]) -> str | None:
        if self.storage is not None:
            return await stored_problem(self.storage, checks)
        if self.output is None:
            return None
        return folder_problem(self.output, checks)

    def _invalid(self, error: RowError) -> None:
        key, label = f"invalid:{error.index}:{error.variant}", f"row {error.index}"
        self.manifest.add(
            key, error.index, label, f"{error.index:06d}", {}, "invalid", str(error), block=False
        )
        self._emit(JobResult(key, error.index, label, "invalid", error=str(error)))

    async def _room(self) -> None:
        """Let the jobs started take their slots; then wait until fewer than ``lookahead``
        jobs wait for one, or fewer than the pool's slots: the pool spreads a model's jobs to
        a server without it only when more wait than its holders can take, so it must see
        them."""
        await asyncio.sleep(0)
        while len(self._unplaced) >= max(1, self.settings.lookahead) and len(self._unplaced) >= sum(
            map(self.pool.slots, self.servers)
        ):
            self._placed.clear()
            await self._placed.wait()

    def _start(self, job: Job) -> None:
        """Wait for a slot for ``job`` and run it there, in a task of its own."""
        task = asyncio.create_task(self._slot_and_run(job))
        self._tasks[task] = job
        self._unplaced.add(task)
        task.add_done_callback(self._tasks.pop)
        task.add_done_callback(self._was_placed)

    def _was_placed(self, task: asyncio.Task[None]) -> None:
        if task in self._unplaced:
            self._unplaced.discard(task)
            self._placed.set()

    async def _slot_and_run(self, job: Job) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            slot = await self.fleet.slot(
                job.ticket, stop=self._stop, give_up_after=self.settings.give_up_after
            )
        finally:
            self._was_placed(task)
        if slot is None:
            if not self._stop.is_set():
                self._fail(
                    job,
                    f"no healthy server for {self.settings.give_up_after:g}s; the job was not run",
                )
            return
        self._running[task] = job
        try:
            await self._run(job, slot)
        finally:
            self._running.pop(task, None)

    def _start_retries(self) -> None:
        while self._retry and not self._stop.is_set():
            self._start(self._retry.popleft())

    def _fail(self, job: Job, error: str, url: str | None = None) -> None:
        self.manifest.failed(job.key, error, block=False)
        self._emit(JobResult(job.key, job.row, job.label, "failed", error=error, server=url))

    async def _run(self, job: Job, slot: Slot) -> None:
        async def submitted(url: str, prompt_id: str) -> None:
            # on disk before the POST: a crash then re-attaches rather than runs it again
            await self.manifest.submitted(job.key, url, prompt_id, block=False)

        async def progress(event: Any) -> None:
            self.on_event("job_event", (slot.url, job, event))

        try:
            outcome = await self.fleet.run(job.ticket, slot, on_submit=submitted, on_event=progress)
            await self._settle(job, outcome, reattached=slot.attach)
        except asyncio.CancelledError:
            if self._cancel_running:  # we stopped following it: the next run re-attaches
                log.info("%s left on %s for the next run", job.label, slot.url)
            raise
        except (ManifestError, OSError, StorageError) as exc:  # outputs cannot be kept
            self._abort(exc)
        except Exception as exc:  # a bug must not lose the row: record it
            log.exception("%s failed on %s", job.label, slot.url)
            self._fail(job, f"{job.label}: {type(exc).__name__}: {exc}", slot.url)

    async def _settle(self, job: Job, outcome: Outcome, *, reattached: bool) -> None:
        # cancelled by us (now, or by the run that submitted it): not a failure
        ours = self._cancel_running or reattached
        state = settle(
            outcome,
            attempts=job.ticket.attempts,
            retries=self.settings.retries,
            cancelled_by=CancelledBy.US if ours else CancelledBy.SOMEONE_ELSE,
        )
        if isinstance(outcome, Done):
            await self._done(job, outcome)
        elif state is State.PENDING:
            self.manifest.requeued(job.key, block=False)
            job.ticket.prompt_id = job.ticket.server = None
            self._retry.append(job)  # run again now, or (once stopped) by the next run
        elif isinstance(outcome, Moved | Lost):
            self._fail(
                job,
                f"{job.label}: gave up after {job.ticket.attempts} attempts ({outcome.error})",
                outcome.server,
            )
        else:
            self._fail(job, f"{job.label}: {outcome.error}", outcome.server)

    async def _done(self, job: Job, outcome: Done) -> None:
        gen = outcome.generation
        folders: set[Path] = set()
        if self.storage is not None:
            files = await store_outputs(gen, job, self.storage)
        elif self.output is not None:
            files = await asyncio.to_thread(save_outputs, gen, job, self.output)
            folders = output_folders(self.output, files)
        else:
            files = []
        executed = gen.timings.executed
        await self.manifest.done(
            job.key,
            files,
            outcome.server,
            seconds=outcome.seconds,
            executed=executed,
            folders=folders,
            block=False,
        )
        self._emit(
            JobResult(
                job.key,
                job.row,
                job.label,
                "done",
                tuple(f["path"] for f in files),
                server=outcome.server,
                seconds=outcome.seconds,
                executed=executed,
                generation=gen if self.output is None and self.storage is None else None,
            )
        )

    def _abort(self, exc: BaseException) -> None:
        """The output folder refuses writes: stop the batch; what was made stays recorded."""
        if self._fatal is None:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            where = getattr(exc, "filename", None) or self.output
            if isinstance(exc, ManifestError | StorageError):  # they name what failed
                self._fatal = exc
            else:
                self._fatal = ManifestError(
                    f"cannot write to the output folder ({where}): {reason}"
                )
                self._fatal.__cause__ = exc
            log.error("stopping the batch: %s", self._fatal)
        self.stop()


def template_variables(template: str | None, vary_names: Iterable[str]) -> frozenset[str]:
    """Names used only to fill the prompt template (never bound to the workflow)."""
    names = set(vary_names)
    if template:
        names |= {f for _, f, _, _ in string.Formatter().parse(template) if f}
    return frozenset(names)

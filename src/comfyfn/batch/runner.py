"""Running a batch over a pool of servers: durable, resumable, results as they finish.

Rows are read one at a time and only as fast as the servers take jobs, so memory stays flat
however long the input. Every job's fate is in ``manifest.sqlite`` in the output folder;
running the same batch again skips finished jobs, re-attaches to jobs still queued or running
on a server (by prompt id: they are not run again) and does the rest. A server that fails is
taken out of the pool and its jobs go elsewhere; a health check puts it back and removes from
its queue any job that was moved away meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import string
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from comfyfn.batch.jobs import Job, JobResult, prepare, save_outputs
from comfyfn.batch.manifest import Manifest
from comfyfn.batch.pool import Pool
from comfyfn.batch.rows import Row, RowError
from comfyfn.client import AsyncClient
from comfyfn.errors import ComfyError, GenerationTimeout, TransportError
from comfyfn.events import Failed, Interrupted, Succeeded
from comfyfn.workflow import Workflow

__all__ = ["Batch", "BatchSettings"]

log = logging.getLogger("comfyfn")
_END = object()


@dataclass(frozen=True)
class BatchSettings:
    prime: int = 1  #: our jobs queued on each server beyond the running one
    retries: int = 3  #: times a job is moved to another server after a server failure
    http_timeout: float = 10.0
    job_timeout: float | None = None  #: a job running longer counts as a server failure
    give_up_after: float = 600.0  #: with every server down this long, remaining rows fail
    health_interval: float = 0.5
    variables: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        from comfyfn.errors import ConfigError

        for name in ("prime", "retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a whole number ≥ 0, not {value!r}")
        if self.http_timeout <= 0 or self.give_up_after < 0:
            raise ConfigError("http_timeout must be > 0 and give_up_after ≥ 0")


class Batch:
    """Rows → images on disk over several servers: iterate ``results()`` (async), or pass
    the batch to :func:`comfyfn.batch.run_batch` (blocking, writes the report).

    Args:
        rows: :class:`~comfyfn.batch.rows.Row` items (or RowErrors), read lazily.
        output: the output folder (images, ``manifest.sqlite``, ``index.html``); ``None``
            keeps nothing on disk and puts each Generation in its result instead.
        servers: ComfyUI URLs (default: the usual server resolution, one server).
        workflow: a built-in name, a file or a Workflow (default Z-Image-Turbo).
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
    ) -> None:
        self.rows = rows
        self.output = Path(output) if output is not None else None
        self.servers = list(dict.fromkeys(servers))
        self.workflow_source = workflow
        self.settings = settings or BatchSettings()
        self.on_event = on_event or (lambda _kind, _data: None)
        self.pool = Pool(self.servers, self.settings.prime + 1)
        self.started = time.monotonic()
        self._stop: asyncio.Event | None = None  # made inside the running loop
        self._cancel_running = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- public ----------------------------------------------------------------------------

    def stop(self, *, cancel_running: bool = False) -> None:
        """Stop taking rows; running jobs finish (or are cancelled on their servers)."""
        self._cancel_running = cancel_running
        if self._stop is not None:
            self._stop.set()
        if cancel_running:
            for task in self._tasks:
                task.cancel()

    async def results(self) -> AsyncIterator[JobResult]:
        """Run the batch, yielding each row's result as it is known."""
        self._stop = asyncio.Event()
        self._results: asyncio.Queue[Any] = asyncio.Queue()
        self.manifest = Manifest(
            self.output / "manifest.sqlite" if self.output is not None else ":memory:"
        )
        timeout = httpx.Timeout(
            self.settings.http_timeout, connect=min(3.0, self.settings.http_timeout)
        )
        async with contextlib.AsyncExitStack() as stack:
            self.clients = {
                url: await stack.enter_async_context(
                    AsyncClient(url, timeout=timeout, retries=1, check_interval=2.0)
                )
                for url in self.servers
            }
            driver = asyncio.create_task(self._drive())
            try:
                while True:
                    item = await self._results.get()
                    if item is _END:
                        break
                    yield item
                await driver
            finally:
                if not driver.done():
                    driver.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await driver
                self.manifest.close()

    # -- driving ---------------------------------------------------------------------------

    def _emit(self, result: JobResult) -> None:
        self._results.put_nowait(result)
        self.on_event("result", result)

    async def _drive(self) -> None:
        health = asyncio.create_task(self._health_loop())
        retry: deque[Job] = deque()
        self._retry = retry
        try:
            wf = await self._workflow()
            for item in self.rows:
                if self._stop.is_set():
                    break
                await self._dispatch_retries()
                job = self._admit(wf, item)
                if job is None:
                    continue
                await self._start(job)
            while self._tasks or (retry and not self._stop.is_set()):
                await self._dispatch_retries()
                if self._tasks:
                    await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Leaving early (an error, or the consumer stopped): cancel running jobs on their
            # servers while the clients are still open; the manifest keeps them 'submitted'.
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            for job in retry:  # moved off a failed server, not yet started again
                self.manifest.requeued(job.key)
            health.cancel()
            self._results.put_nowait(_END)

    async def _workflow(self) -> Workflow:
        """The workflow, converted/typed with the first server that answers."""
        deadline = time.monotonic() + self.settings.give_up_after
        while True:
            errors = []
            for url, client in self.clients.items():
                try:
                    return await client.workflow(self.workflow_source)
                except TransportError as exc:
                    errors.append(str(exc))
                    await self.pool.mark_down(url)
            if time.monotonic() > deadline:
                raise ComfyError(
                    f"no server gave its node definitions for "
                    f"{self.settings.give_up_after:g}s: {'; '.join(errors)}"
                )
            await asyncio.sleep(self.settings.health_interval)

    def _admit(self, wf: Workflow, item: Row | RowError) -> Job | None:
        """Record the row; a job to run, or None (invalid, or finished by an earlier run)."""
        if isinstance(item, Row):
            prepared = prepare(wf, item, variables=self.settings.variables)
        else:
            prepared = item
        if isinstance(prepared, RowError):
            key = f"invalid:{prepared.index}:{prepared.variant}"
            self.manifest.add(
                key,
                prepared.index,
                f"row {prepared.index}",
                f"{prepared.index:06d}",
                {},
                "invalid",
                str(prepared),
            )
            self._emit(
                JobResult(
                    key, prepared.index, f"row {prepared.index}", "invalid", error=str(prepared)
                )
            )
            return None
        job = prepared
        record = self.manifest.get(job.key)
        if record is not None and record.state == "done":
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
        if record is not None and record.state == "submitted" and record.server in self.clients:
            job.prompt_id, job.server = record.prompt_id, record.server
        else:
            self.manifest.add(job.key, job.row, job.label, job.stem, job.values)
        return job

    async def _start(self, job: Job) -> None:
        attach = job.server if job.prompt_id else None
        if attach and self.pool.states[attach].healthy:
            self.pool.states[attach].in_flight += 1  # already on that server: no slot to wait
            url = attach
        else:
            if attach and job.prompt_id:  # its server is down: it must not run there too
                self.pool.states[attach].orphans.add(job.prompt_id)
            job.prompt_id = job.server = None
            url = await self._acquire()
            if url is None:
                if not self._stop.is_set():
                    self._fail(
                        job,
                        f"no healthy server for {self.settings.give_up_after:g}s; "
                        "the job was not run",
                    )
                return
            if self._stop.is_set():
                await self.pool.release(url, ok=False)
                return
        task = asyncio.create_task(self._run(job, url, attach=url == attach))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _acquire(self) -> str | None:
        """A slot on a healthy server; None once stopped or after giving up on all servers."""
        while not self._stop.is_set():
            if self.pool.all_down_for() > self.settings.give_up_after:
                return None
            try:
                return await asyncio.wait_for(self.pool.acquire(), self.settings.health_interval)
            except TimeoutError:
                continue
        return None

    async def _dispatch_retries(self) -> None:
        while self._retry and not self._stop.is_set():
            await self._start(self._retry.popleft())

    def _fail(self, job: Job, error: str, url: str | None = None) -> None:
        self.manifest.failed(job.key, error)
        self._emit(JobResult(job.key, job.row, job.label, "failed", error=error, server=url))

    async def _run(self, job: Job, url: str, *, attach: bool) -> None:
        client = self.clients[url]
        prompt_id = job.prompt_id if attach else str(uuid.uuid4())
        if not attach:
            self.manifest.submitted(job.key, url, prompt_id)
            job.attempts += 1
        started = time.monotonic()
        busy, ok = 0.0, False
        try:
            outcome = None
            async for event in client.stream_graph(
                job.workflow, prompt_id=prompt_id, attach=attach, timeout=self.settings.job_timeout
            ):
                self.on_event("job_event", (url, job, event))
                if isinstance(event, Succeeded | Failed | Interrupted):
                    outcome = event
            if isinstance(outcome, Succeeded):
                gen = outcome.generation
                busy = gen.timings.executed
                files = (
                    await asyncio.to_thread(save_outputs, gen, job, self.output)
                    if self.output is not None
                    else []
                )
                seconds = time.monotonic() - started
                self.manifest.done(job.key, files, seconds, url)
                ok = True
                self._emit(
                    JobResult(
                        job.key,
                        job.row,
                        job.label,
                        "done",
                        tuple(files),
                        server=url,
                        seconds=seconds,
                        generation=gen if self.output is None else None,
                    )
                )
            elif isinstance(outcome, Interrupted) and outcome.error.lost:
                self._requeue(job, url, str(outcome.error))  # lost by a restart: run it again
            elif outcome is not None:
                self._fail(job, f"{job.label}: {outcome.error}", url)
        except (TransportError, GenerationTimeout) as exc:
            log.warning("%s failed on %s: %s", job.label, url, exc)
            await self.pool.mark_down(url)
            self.on_event("server_down", url)
            self.pool.states[url].orphans.add(prompt_id)
            self._requeue(job, url, str(exc))
        except ComfyError as exc:
            self._fail(job, f"{job.label}: {exc}", url)
        except Exception as exc:  # e.g. the disk is full: record it, never lose the row
            log.exception("%s failed on %s", job.label, url)
            self._fail(job, f"{job.label}: {type(exc).__name__}: {exc}", url)
        finally:
            await self.pool.release(url, busy=busy, ok=ok)

    def _requeue(self, job: Job, url: str, reason: str) -> None:
        if job.attempts > self.settings.retries:
            self._fail(job, f"{job.label}: gave up after {job.attempts} attempts ({reason})", url)
            return
        self.manifest.requeued(job.key)
        job.prompt_id = job.server = None
        self._retry.append(job)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval)
            for url in self.pool.down():
                client = self.clients[url]
                try:
                    await client.system_stats()
                    orphans = set(self.pool.states[url].orphans)
                    if orphans:  # moved elsewhere while it was down: must not run here too
                        await client.delete_from_queue(*orphans)
                        running = {i[1] for i in (await client.queue())["queue_running"]}
                        for prompt_id in orphans & running:
                            await client.interrupt(prompt_id)
                        self.pool.states[url].orphans -= orphans
                except ComfyError:
                    continue
                await self.pool.mark_up(url)
                self.on_event("server_up", url)


def template_variables(template: str | None, vary_names: Iterable[str]) -> frozenset[str]:
    """Names used only to fill the prompt template (never bound to the workflow)."""
    names = set(vary_names)
    if template:
        names |= {f for _, f, _, _ in string.Formatter().parse(template) if f}
    return frozenset(names)

"""Batches through the shared job store (``comfyfn batch FILE --db …``).

The rows become one named batch of jobs in the job store, :mod:`comfyfn.jobs`
(:func:`enqueue`): one job per row, keyed by the row's content key
(:attr:`~comfyfn.batch.jobs.Job.key`), so enqueuing the same file again adds nothing and a
changed row is a new job. Each job holds its bound graph and its ``target`` (the ``-o``
folder or ``s3://`` URL and the row's file name, ``images/<stem>``): any worker of the
shared queue (``comfyfn worker``, a gateway replica, or ``--work`` in the submitting
process) runs it and writes its outputs there (every kind), under the same names as a batch
run here. Rows carry their ``priority`` into the queue, where API jobs and batch rows are
claimed by priority alike.

:class:`QueuedBatch` follows a batch from any shell: its results as the jobs finish (the
same :class:`~comfyfn.batch.jobs.JobResult` a batch run here yields) and, at the end, the
records the report is written from (:class:`StoredRecords`, what a manifest gives it).

A row's input images travel through the batch's own output place, which every worker of it
writes to already: :func:`enqueue` stores each image once, under ``inputs/<content hash>``
(:data:`INPUTS`), and the row names them (``params["inputs"]``: the name the graph gives the
image on a server → its key there); the worker reads them back before it submits the row.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from comfyfn.batch.jobs import Job, JobResult, aprepare, output_name, stored_problem
from comfyfn.batch.manifest import Record, folder_problem
from comfyfn.batch.report import Summary, nearest_rank, write_report_to
from comfyfn.batch.rows import Row, RowError
from comfyfn.errors import ComfyError
from comfyfn.fleet import Pool, QueuedRow
from comfyfn.models import model_set
from comfyfn.storage import Storage, open_storage
from comfyfn.workflow import InputImage, Workflow

__all__ = [
    "INPUTS",
    "POLL",
    "QueueStore",
    "QueuedBatch",
    "StoredRecords",
    "batch_name",
    "enqueue",
    "load_workflow",
]

log = logging.getLogger("comfyfn.batch")
_LOOKS_AT_ONCE = 16  #: object-store HEADs in flight while checking a batch's done files
POLL = 0.5  #: seconds between looks at the batch's jobs while following it
#: seconds the clocks of the machines finishing a batch's jobs may be apart (NTP keeps them far
#: closer); a follower reads back this far from the latest finish it saw, and reads all of
#: them again when the count says it missed one
CLOCK_SKEW = 5.0
#: the store's final states as a batch run names them (a row that could not run: ``invalid``)
RESULT_STATE = {"succeeded": "done", "failed": "failed", "cancelled": "failed"}
INVALID = "RowError"  #: the error type of a row stored failed because it cannot run
INPUTS = "inputs"  #: where in a batch's output place its rows' input images are kept


class QueueStore(Protocol):
    """What a queued batch needs of the shared store (:class:`comfyfn.jobs.Store`)."""

    def add_batch_jobs(self, batch: str, rows: Sequence[QueuedRow]) -> int: ...

    def batch_progress(self, batch: str) -> tuple[int, int]: ...

    def batch_finished(
        self, batch: str, since: float | None = None
    ) -> list[tuple[str, str | None, float]]: ...

    def batch_jobs(self, job_ids: Collection[str]) -> list[tuple[Any, list[str]]]: ...


class DoneRowsStore(Protocol):
    """What :func:`requeue_damaged` needs of the shared store (:class:`comfyfn.jobs.Store`)."""

    def batch_outputs(
        self, batch: str, row_keys: Collection[str], output: str
    ) -> Sequence[tuple[str, Sequence[Any]]]: ...

    def redo_batch_jobs(self, batch: str, job_ids: Collection[str]) -> set[str]: ...


def batch_name(source: Path, output: str) -> str:
    """The default name of a batch: the job file's stem and a digest of where its outputs
    go, so the same command names the same batch on any machine."""
    return f"{source.stem[:150]}-{hashlib.sha256(output.encode()).hexdigest()[:8]}"


def load_workflow(source: str | Path | Mapping[str, Any] | Workflow) -> Workflow:
    """The batch's workflow, typed with the bundled node definitions (enqueuing needs no
    server: a worker checks the bound graph against its own server before it runs it)."""
    return Workflow.load(source)


def _target(output: str, job: Job) -> str:
    return json.dumps({"output": output, "name": output_name(job), "deliver": job.deliver})


def _job_row(job: Job, output: str, priority: int, inputs: Mapping[str, str]) -> QueuedRow:
    wf = job.workflow
    shown = {"key": job.key, "row": job.row, "label": job.label, "stem": job.stem}
    shown["shown"] = job.values
    params = {"graph": wf.to_api(), **shown}
    if inputs:
        params["inputs"] = dict(inputs)
    return QueuedRow(
        row_key=job.key,
        workflow=wf.name or "batch",
        params=params,
        target=_target(output, job),
        priority=priority,
        models=model_set(wf),
    )


def input_key(image: InputImage) -> str:
    """Where a row's input image is kept in its batch's output place (by content)."""
    return f"{INPUTS}/{image.filename}"


class _InputStore:
    """Keeps the input images of the rows being enqueued in the batch's output place, each
    image once however many rows use it."""

    def __init__(self, output: str) -> None:
        self.output = output
        self._storage: Storage | None = None
        self._kept: set[str] = set()

    async def keep(self, uploads: Mapping[str, InputImage]) -> dict[str, str]:
        """The key of each image (by its name on a server), stored if it is new here."""
        if self._storage is None and uploads:
            self._storage = open_storage(self.output)
        keys = {}
        for server_name, image in uploads.items():
            key = input_key(image)
            if key not in self._kept:
                assert self._storage is not None
                await self._storage.put(key, image.data, image.media_type)
                self._kept.add(key)
            keys[server_name] = key
        return keys


def _invalid_row(key: str, workflow: str, shown: dict[str, Any], message: str) -> QueuedRow:
    error = {"type": INVALID, "message": message}
    return QueuedRow(row_key=key, workflow=workflow, params=shown, target=None, error=error)


def _error_row(error: RowError, workflow: str) -> QueuedRow:
    digest = hashlib.sha256(str(error).encode()).hexdigest()[:16]
    key = f"invalid-{error.index}-{error.variant}-{digest}"
    shown = {"key": key, "row": error.index, "label": f"row {error.index}"}
    shown["stem"] = f"{error.index:06d}"
    return _invalid_row(key, workflow, {**shown, "shown": {}}, str(error))


async def enqueue(
    store: QueueStore,
    name: str,
    rows: Iterable[Row | RowError],
    workflow: Workflow,
    output: str,
    *,
    variables: frozenset[str] = frozenset(),
    chunk: int = 500,
) -> tuple[set[str], int]:
    """Add the rows to batch ``name`` (those it holds already are kept as they are): the
    content keys of all the rows, and how many jobs were added. Raises
    :class:`~comfyfn.storage.StorageError` if a row's input image cannot be kept in
    ``output`` (nothing of that row is enqueued)."""
    inputs = _InputStore(output)
    keys: set[str] = set()
    added = 0
    pending: list[QueuedRow] = []
    for item in rows:
        prepared = (
            await aprepare(workflow, item, variables=variables) if isinstance(item, Row) else item
        )
        if isinstance(prepared, RowError):
            row = _error_row(prepared, workflow.name or "batch")
        else:
            priority = item.priority if isinstance(item, Row) else 0
            kept = await inputs.keep(prepared.workflow.uploads)
            row = _job_row(prepared, output, priority, kept)
        keys.add(row.row_key)
        pending.append(row)
        if len(pending) >= chunk:
            added += await asyncio.to_thread(store.add_batch_jobs, name, pending)
            pending = []
    if pending:
        added += await asyncio.to_thread(store.add_batch_jobs, name, pending)
    return keys, added


async def requeue_damaged(
    store: DoneRowsStore, name: str, output: str, keys: Collection[str]
) -> list[str]:
    """Queue again the done rows (of the rows ``keys``: the file just enqueued) of batch
    ``name`` whose files went missing from ``output`` (the batch's folder or ``s3://`` URL)
    or, in a folder, no longer match their recorded size and MD5 — as a batch run without
    the store remakes them when it resumes; why, for each row queued again
    (``images/000007.png is missing``). When not one done row's files are there, ``output``
    is taken for a place this machine does not see as the workers do (another host's
    folder): nothing is queued again, and a warning says so; as when the place cannot be
    looked at (an object store that refuses)."""
    outputs = await asyncio.to_thread(store.batch_outputs, name, keys, output)
    checks = {
        job_id: [{"path": f.path, "size": f.size, "md5": f.etag} for f in files]
        for job_id, files in outputs
        if files
    }
    if not checks:
        return []
    try:
        if output.startswith("s3://"):
            found = await _stored_problems(open_storage(output), checks)
        else:
            found = await asyncio.to_thread(_folder_problems, Path(output), checks)
    except ComfyError as exc:
        log.warning("the done rows' files in %s could not be checked: %s", output, exc)
        return []
    problems = {job_id: problem for job_id, problem in found.items() if problem is not None}
    if len(problems) > 1 and len(problems) == len(found):
        log.warning(
            "none of the %d done rows of batch %s has its files in %s: not the place its "
            "workers write to, as seen from here? Nothing is queued again",
            len(found),
            name,
            output,
        )
        return []
    redone = await asyncio.to_thread(store.redo_batch_jobs, name, problems) if problems else ()
    for job_id in sorted(redone):
        log.warning("%s; queued again", problems[job_id])
    return [problems[job_id] for job_id in sorted(redone)]


async def _stored_problems(
    storage: Storage, checks: Mapping[str, list[dict[str, Any]]]
) -> dict[str, str | None]:
    """:func:`stored_problem` of each job, by :data:`_LOOKS_AT_ONCE` lookers (a HEAD per
    file: one after another, 50,000 rows would take minutes)."""
    found: dict[str, str | None] = {}
    failed: list[ComfyError] = []
    waiting = iter(checks.items())

    async def looker() -> None:
        for job_id, files in waiting:
            if failed:
                return
            try:
                found[job_id] = await stored_problem(storage, files)
            except ComfyError as exc:  # the store refuses: no point in asking on
                failed.append(exc)

    await asyncio.gather(*(looker() for _ in range(_LOOKS_AT_ONCE)))
    if failed:
        raise failed[0]
    return found


def _folder_problems(
    folder: Path, checks: Mapping[str, list[dict[str, Any]]]
) -> dict[str, str | None]:
    return {job_id: folder_problem(folder, files) for job_id, files in checks.items()}


def _record(job: Any, files: list[str]) -> Record:
    """A finished job of the store (a ``JobRecord``) as the report's record of its row."""
    params = job.params
    state = RESULT_STATE.get(job.state, job.state)
    if job.error is not None and job.error.get("type") == INVALID:
        state = "invalid"
    seconds = job.turnaround  # None for a job that ended before schema revision 0004
    if seconds is None and job.state == "succeeded" and job.started_at and job.finished_at:
        seconds = round(job.finished_at - job.started_at, 3)
    return Record(
        key=str(params.get("key", job.id)),
        row=int(params.get("row", 0)),
        label=str(params.get("label", job.id)),
        stem=str(params.get("stem", "")),
        params=dict(params.get("shown") or {}),
        state=state,
        server=job.server,
        prompt_id=job.prompt_id,
        checks=[{"path": f} for f in files],
        error=None if job.error is None else str(job.error.get("message", "")),
        attempts=job.attempts,
        seconds=seconds,
        executed=job.executed,
    )


def _result(record: Record, skipped: bool) -> JobResult:
    return JobResult(
        record.key,
        record.row,
        record.label,
        "skipped" if skipped and record.state == "done" else record.state,
        tuple(record.files),
        error=record.error,
        server=record.server,
        seconds=record.seconds,
        executed=record.executed,
    )


class StoredRecords:
    """A batch's finished rows as the report reads them (what a manifest gives it)."""

    def __init__(self, records: Iterable[Record]) -> None:
        self._records = sorted(records, key=lambda r: (r.row, r.stem))

    def records(self, state: str | None = None) -> Iterator[Record]:
        return (r for r in self._records if state is None or r.state == state)

    def percentile(self, q: float, of: str = "executed") -> float | None:
        values = [getattr(r, of) for r in self.records("done")]
        return nearest_rank([v for v in values if v is not None], q)


@dataclass
class QueuedBatch:
    """Follows batch ``name`` in ``store`` until every job of it has finished. ``keys``:
    only the jobs of these rows (the rows of the file just enqueued), else all of them.
    ``servers``/``pool``: the servers of a worker running in this process, for the
    progress display (none when the work runs elsewhere). Through an outage of the store
    (its ``transient`` errors) it keeps looking, saying so once. A finished row queued
    again meanwhile (``batch retry`` from another shell) is followed again: ``on_event``
    gets ``queued_again`` with the result said of it, and :meth:`results` yields it again
    when it ends."""

    store: QueueStore
    name: str
    keys: set[str] | None = None
    servers: tuple[str, ...] = ()
    pool: Pool | None = None
    poll: float = POLL
    on_event: Callable[[str, Any], None] = lambda kind, data: None
    #: which of the store's errors mean an outage to ride through (it looks again later)
    transient: Callable[[BaseException], bool] = lambda exc: False
    #: the jobs finished before this run changed anything, and when (a row still ended then
    #: is ``skipped``); None: those finished before the first look
    done_before: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.total: int | None = None
        self.finished: dict[str, Record] = {}
        self._yielded: dict[str, JobResult] = {}  #: what was said of each finished job
        self._seen: dict[str, float] = {}  #: every finished job of the batch: its finish time
        self._down_since: float | None = None

    async def results(self) -> AsyncIterator[JobResult]:
        """Each row's result as its job finishes (rows finished before this run are
        ``skipped``, as in a resumed batch run: see ``done_before``). Each look counts the
        batch's finished jobs and reads only those new since the last one, however long the
        batch."""
        first = True
        while True:
            try:
                finished_now = await self._look()
            except Exception as exc:
                if not self.transient(exc):
                    raise
                self._store_down(exc)  # the store is out: follow on when it is back
                await asyncio.sleep(self.poll)
                continue
            self._store_back()
            if first:  # servers of a worker here down before anyone followed: said now
                for url, state in self.pool.states.items() if self.pool else ():
                    if not state.healthy:
                        self.server_health(url, False)
            for job, files in finished_now:
                if job.id in self._yielded:  # queued again and ended again between two looks
                    self._queued_again(job.id)
                before = first
                if self.done_before is not None:
                    before = self.done_before.get(job.id) == job.finished_at
                record = self.finished[job.id] = _record(job, files)
                result = self._yielded[job.id] = _result(record, before)
                self.on_event("result", result)
                yield result
            if await self._all_finished():
                return
            first = False
            await asyncio.sleep(self.poll)

    async def _look(self) -> list[tuple[Any, list[str]]]:
        """One look at the store: the jobs of ours finished since the last one."""
        total, finished = await asyncio.to_thread(self.store.batch_progress, self.name)
        unseen = await self._newly_finished(finished) if finished > len(self._seen) else {}
        ours = [i for i, (key, _) in unseen.items() if self.keys is None or key in self.keys]
        got = await asyncio.to_thread(self.store.batch_jobs, ours)
        # as finished as when counted (not queued again in between: read when it ends again)
        jobs = [(job, f) for job, f in got if job.finished_at == unseen[job.id][1]]
        # seen only once read (an outage between the two reads, a record not returned: the
        # next look reads it again), or not ours to read
        read = {job.id for job, _ in jobs} | (unseen.keys() - set(ours))
        self._seen.update((i, at) for i, (_, at) in unseen.items() if i in read)
        self.total = total if self.keys is None else len(self.keys)
        return jobs

    async def _all_finished(self) -> bool:
        """Every job of ours read as finished, and finished still, at the time read: one
        queued again since (``batch retry``, or a submission remaking its lost files, while
        this follower ran) is forgotten, to be read again when it finishes again, so the
        report does not show its old end. One read of the batch's finished jobs, at the end."""
        if self.total is None or len(self.finished) < self.total:
            return False
        try:
            got = await asyncio.to_thread(self.store.batch_finished, self.name)
        except Exception as exc:
            if not self.transient(exc):
                raise
            self._store_down(exc)
            return False
        ended = {job_id: at for job_id, _, at in got}
        again = [i for i in self.finished if ended.get(i) != self._seen.get(i)]
        for job_id in again:
            del self.finished[job_id]
            self._seen.pop(job_id, None)
            self._queued_again(job_id)
        return not again

    def _queued_again(self, job_id: str) -> None:
        """Take back what was said of a job now run again."""
        self.on_event("queued_again", self._yielded.pop(job_id))

    def server_health(self, url: str, up: bool) -> None:
        """A server of the worker here went down or came back: said as a batch run says it
        (``server_down``/``server_up``); one down before the follow began is said at its
        first look."""
        self.on_event("server_up" if up else "server_down", url)

    def _store_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
            log.warning("the job store does not answer (%s); following on when it does", reason)
            self.on_event("store_down", reason)

    def _store_back(self) -> None:
        if self._down_since is not None:
            log.warning("the job store answers again")
            self.on_event("store_up", round(time.monotonic() - self._down_since, 1))
            self._down_since = None

    async def _newly_finished(self, finished: int) -> dict[str, tuple[str | None, float]]:
        """The batch's jobs finished since the last look (job id → row key, finish time).
        Read from a little before the latest finish seen (machines' clocks differ); all of
        them again if that misses some (a clock further off)."""
        since = max(self._seen.values(), default=None)
        got = await asyncio.to_thread(
            self.store.batch_finished, self.name, None if since is None else since - CLOCK_SKEW
        )
        if len(self._seen.keys() | {i for i, _, _ in got}) < finished:
            got = await asyncio.to_thread(self.store.batch_finished, self.name)
        # (a job finished again since it was seen, queued again meanwhile, is new again)
        return {i: (key, at) for i, key, at in got if self._seen.get(i) != at}

    def report(self, folder: Path, counted: dict[str, int]) -> tuple[Summary, Path]:
        """The summary (also in ``summary.json``), ``results.csv`` and the contact sheet,
        written into ``folder`` as a batch run writes them."""
        records = StoredRecords(self.finished.values())
        seconds = time.monotonic() - self.started
        return write_report_to(records, folder, self.pool, seconds, counted)

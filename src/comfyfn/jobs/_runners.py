"""The runners' side of the job store: claiming jobs, heartbeats, handing jobs back, and
the registry of runners (``cfn_workers``), as the methods of
:class:`comfyfn.jobs.store.Store` (which provides the transactions and the clock). The
claim protocol and fencing are described in :mod:`comfyfn.jobs.store`.

A runner registers itself (:meth:`RunnerStore.register_worker`: name, host, pid, its
servers with the models loaded on each, free slots) at start and at every heartbeat, and
removes itself on a graceful stop; a runner killed stays listed with its last heartbeat
(``comfyfn workers`` shows it stale) until one of the same name starts again or
:meth:`RunnerStore.forget_workers` drops it.

A named batch (``comfyfn batch FILE --db …``) is a set of jobs with the same ``batch``
column, owned by no API key (``key_id`` :data:`BATCH_KEY`): one per row, keyed by the row's
content (``row_key``), so enqueuing the same file again adds nothing
(:meth:`BatchStore.add_batch_jobs`); ``target`` says where a worker writes the outputs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from comfyfn.fleet import QueuedRow
from comfyfn.jobs.schema import (
    MAX_PRIORITY,
    STATES,
    TERMINAL,
    Claim,
    FileRecord,
    JobRecord,
    WorkerRecord,
    _file,
    _job,
    _new_id,
    _worker,
    files_t,
    jobs_t,
    models_key,
    workers_t,
)

__all__ = ["BATCH_KEY", "NOTIFY_CHANNEL", "BatchStore", "RunnerStore", "fenced"]

#: the ``key_id`` of a batch's jobs: no API key's (those are ``key_…``), so no caller sees them
BATCH_KEY = "batch"
MAX_BATCH_NAME = 200  #: the ``batch`` column's width

NOTIFY_CHANNEL = "cfn_jobs"  #: PostgreSQL: notified whenever a job enters the queue


class RunnerStore:
    """Claims, heartbeats and the runners' registry (mixed into the store)."""

    clock: Callable[[], float]
    dialect: str
    _read: Callable[[], AbstractContextManager[Connection]]
    _write: Callable[[], AbstractContextManager[Connection]]

    def _notify(self, conn: Connection) -> None:
        """PostgreSQL: wake the listening workers when this transaction commits."""
        if self.dialect == "postgresql":
            conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")))

    def claim_job(
        self, worker: str, *, stale_after: float = 30.0, models: Collection[str] = ()
    ) -> JobRecord | None:
        """Take the first queued job, else a running job whose heartbeat is stale; or None."""
        claimed = self.claim_jobs(worker, limit=1, stale_after=stale_after, models=models)
        return claimed[0] if claimed else None

    def claim_jobs(
        self,
        worker: str,
        *,
        limit: int,
        stale_after: float = 30.0,
        models: Collection[str] = (),
        batch: str | None = None,
        batch_rows_only: bool = False,
    ) -> list[JobRecord]:
        """Take up to ``limit`` jobs in one transaction: the queued ones first (highest
        priority, then those whose model set digest is in ``models`` — loaded on one of the
        claimer's servers —, then oldest), then running ones whose heartbeat is older than
        ``stale_after`` seconds (oldest first). ``batch``: only that batch's jobs;
        ``batch_rows_only``: no API job (a worker that cannot bind them).

        See the module docstring for why two claimers never get the same job.
        """
        now = self.clock()
        queued = jobs_t.c.state == "queued"
        stale = sa.and_(
            jobs_t.c.state == "running",
            sa.or_(jobs_t.c.heartbeat_at.is_(None), jobs_t.c.heartbeat_at < now - stale_after),
        )
        if batch is not None:
            queued, stale = queued & (jobs_t.c.batch == batch), stale & (jobs_t.c.batch == batch)
        if batch_rows_only:
            rows_only = jobs_t.c.key_id == BATCH_KEY
            queued, stale = queued & rows_only, stale & rows_only
        with self._read() as conn:  # most looks find nothing: they take no write lock
            if not _any(conn, queued, stale):
                return []
        with self._write() as conn:
            claimed: list[JobRecord] = []
            loaded = sa.case((jobs_t.c.models.in_(sorted(models)), 0), else_=1)
            by_queue: tuple[Any, ...] = (jobs_t.c.priority.desc(), loaded, jobs_t.c.created_at)
            if not models:
                by_queue = (jobs_t.c.priority.desc(), jobs_t.c.created_at)
            for condition, order in ((queued, by_queue), (stale, (jobs_t.c.heartbeat_at,))):
                if len(claimed) >= limit:
                    break
                ids = (
                    conn.execute(
                        sa.select(jobs_t.c.id)
                        .where(condition)
                        .order_by(*order, jobs_t.c.id)
                        .limit(limit - len(claimed))
                        .with_for_update(skip_locked=True)
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    continue
                rows = conn.execute(
                    sa.update(jobs_t)
                    .where(jobs_t.c.id.in_(ids), condition)  # the condition again: a last guard
                    .values(
                        state="running",
                        claimed_by=worker,
                        claims=jobs_t.c.claims + 1,
                        heartbeat_at=now,
                        updated_at=now,
                        started_at=sa.func.coalesce(jobs_t.c.started_at, now),
                    )
                    .returning(*jobs_t.c)
                ).all()
                by_id = {row._mapping["id"]: _job(row) for row in rows}
                claimed += [by_id[i] for i in ids if i in by_id]
            return claimed

    def heartbeat(self, worker: str, held: Mapping[str, int] | None = None) -> set[str]:
        """Mark the running jobs this worker holds as alive (heartbeat_at = now): those of
        ``held`` (job id → the claim counter it claimed at), else every one claimed by this
        name. Returns the jobs of ``held`` it no longer holds (taken over, or ended)."""
        where = [jobs_t.c.state == "running", jobs_t.c.claimed_by == worker]
        if held is not None:
            if not held:
                return set()
            pairs = sorted(held.items())
            where.append(sa.tuple_(jobs_t.c.id, jobs_t.c.claims).in_(pairs))
        with self._write() as conn:
            alive = conn.execute(
                sa.update(jobs_t)
                .where(*where)
                .values(heartbeat_at=self.clock())
                .returning(jobs_t.c.id)
            ).scalars()
            return set(held or ()) - set(alive)

    def holds(self, job_id: str, claim: Claim) -> bool:
        """Whether ``claim`` is still the job's (it is running and was not taken over)."""
        with self._read() as conn:
            row = conn.execute(sa.select(jobs_t.c.id).where(fenced(job_id, claim))).first()
        return row is not None

    def release_job(self, job_id: str, fence: Claim | None = None, *, forget: bool = False) -> None:
        """Hand a running job back to the queue (server/prompt_id kept for re-attaching, or
        with ``forget`` cleared: its prompt was taken off its server); with ``fence``, only
        if that claim is still the job's."""
        where = fenced(job_id, fence) if fence is not None else jobs_t.c.id == job_id
        values: dict[str, Any] = {"state": "queued", "claimed_by": None, "heartbeat_at": None}
        if forget:
            values.update(server=None, prompt_id=None)
        with self._write() as conn:
            released = conn.execute(
                sa.update(jobs_t)
                .where(where, jobs_t.c.state == "running")
                .values(updated_at=self.clock(), **values)
            ).rowcount
            if released:
                self._notify(conn)

    # -- the runners' registry -----------------------------------------------------------

    def register_worker(
        self,
        name: str,
        *,
        host: str,
        pid: int,
        free_slots: int,
        servers: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add or refresh this runner's row (heartbeat_at = now)."""
        now = self.clock()
        values = {
            "host": host,
            "pid": pid,
            "heartbeat_at": now,
            "free_slots": free_slots,
            "servers": json.dumps(list(servers)),
        }
        with self._write() as conn:
            updated = conn.execute(
                sa.update(workers_t)
                .where(workers_t.c.name == name, workers_t.c.pid == pid)
                .values(**values)
            ).rowcount
            if not updated:  # new, or a restart under the same name: a fresh row
                conn.execute(sa.delete(workers_t).where(workers_t.c.name == name))
                conn.execute(sa.insert(workers_t).values(name=name, started_at=now, **values))

    def unregister_worker(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(sa.delete(workers_t).where(workers_t.c.name == name))

    def forget_workers(self, silent_for: float) -> int:
        """Drop the runners without a heartbeat for ``silent_for`` seconds; how many."""
        with self._write() as conn:
            return int(
                conn.execute(
                    sa.delete(workers_t).where(workers_t.c.heartbeat_at < self.clock() - silent_for)
                ).rowcount
            )

    def workers(self) -> list[WorkerRecord]:
        """Every registered runner (by name) with the number of jobs it holds."""
        held = (
            sa.select(jobs_t.c.claimed_by, sa.func.count().label("n"))
            .where(jobs_t.c.state == "running")
            .group_by(jobs_t.c.claimed_by)
            .subquery()
        )
        query = (
            sa.select(workers_t, held.c.n)
            .outerjoin(held, held.c.claimed_by == workers_t.c.name)
            .order_by(workers_t.c.name)
        )
        with self._read() as conn:
            return [_worker(row, int(row._mapping["n"] or 0)) for row in conn.execute(query)]


def fenced(job_id: str, claim: Claim | None) -> sa.ColumnElement[bool]:
    """The job, if ``claim`` is still its claim (running, same worker, same counter)."""
    assert claim is not None
    return sa.and_(
        jobs_t.c.id == job_id,
        jobs_t.c.state == "running",
        jobs_t.c.claimed_by == claim.worker,
        jobs_t.c.claims == claim.number,
    )


def _any(conn: Connection, queued: Any, stale: Any) -> bool:
    """Whether a job is queued or stale: each looked up in the order of its own index (the
    queue's, the heartbeats'), so the look costs the same with a million finished jobs. (One
    ``queued OR stale … LIMIT 1`` is planned as a scan from the table's start, where the
    finished jobs are: 19 ms at 100,000 of them.)"""
    first_queued = sa.select(jobs_t.c.id).where(queued)
    first_queued = first_queued.order_by(jobs_t.c.priority.desc(), jobs_t.c.created_at)
    if conn.execute(first_queued.limit(1)).first() is not None:
        return True
    first_stale = sa.select(jobs_t.c.id).where(stale).order_by(jobs_t.c.heartbeat_at)
    return conn.execute(first_stale.limit(1)).first() is not None


def _output_of(target: str | None) -> str | None:
    """The output place a batch row's target names (None if it has none)."""
    try:
        place = json.loads(target)["output"] if target else None
    except (ValueError, TypeError, KeyError):
        return None
    return str(place) if place is not None else None


#: a job queued again as new (:meth:`BatchStore.retry_batch`, :meth:`BatchStore.redo_batch_jobs`)
_AS_NEW: dict[str, Any] = {
    "state": "queued",
    "error": None,
    "attempts": 0,
    "progress": 0.0,
    "server": None,
    "prompt_id": None,
    "claimed_by": None,
    "cancel_requested": False,
    "finished_at": None,
    "started_at": None,
    "executed": None,
    "turnaround": None,
}


class BatchStore(RunnerStore):
    """Named batches of jobs, besides the runners' side (mixed into the store)."""

    def add_batch_jobs(self, batch: str, rows: Sequence[QueuedRow]) -> int:
        """Enqueue the rows of ``batch`` it does not hold yet (by ``row_key``), in one
        transaction; how many were added. Race-safe: two submitters of the same file add
        each row once (the idempotency constraint)."""
        if not batch or len(batch) > MAX_BATCH_NAME:
            raise ValueError(f"a batch name has 1 to {MAX_BATCH_NAME} characters")
        now = self.clock()
        values = [self._batch_values(batch, row, now) for row in rows]
        if not values:
            return 0
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        added = 0
        with self._write() as conn:
            for start in range(0, len(values), 500):
                statement = dialect_insert(jobs_t).values(values[start : start + 500])
                inserted = statement.on_conflict_do_nothing().returning(jobs_t.c.id)
                added += len(conn.execute(inserted).all())  # (rowcount: -1 on PostgreSQL)
            if added:
                self._notify(conn)
        return added

    @staticmethod
    def _batch_values(batch: str, row: QueuedRow, now: float) -> dict[str, Any]:
        failed = row.error is not None
        return {
            "id": _new_id("job"),
            "key_id": BATCH_KEY,
            "workflow": row.workflow,
            "params": json.dumps(row.params),
            "state": "failed" if failed else "queued",
            "progress": 0.0,
            "error": json.dumps(row.error) if failed else None,
            "outputs": "[]",
            "idempotency_key": f"{batch}:{row.row_key}",
            "created_at": now,
            "updated_at": now,
            "finished_at": now if failed else None,
            "cancel_requested": False,
            "attempts": 0,
            "priority": max(-MAX_PRIORITY, min(MAX_PRIORITY, row.priority)),
            "claims": 0,
            "models": models_key(row.models),
            "batch": batch,
            "target": row.target,
            "row_key": row.row_key,
        }

    def batch_states(self, batch: str, row_keys: Collection[str] | None = None) -> dict[str, str]:
        """Job id → state, for every job of ``batch`` (empty: no such batch); with
        ``row_keys``, for the jobs of those rows only."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(jobs_t.c.id, jobs_t.c.state, jobs_t.c.row_key).where(
                    jobs_t.c.batch == batch
                )
            ).all()
        return {str(i): str(s) for i, s, key in rows if row_keys is None or key in row_keys}

    def batch_progress(self, batch: str) -> tuple[int, int]:
        """(jobs, finished jobs) of ``batch``, counted on its index alone."""
        finished = sa.case((jobs_t.c.state.in_(sorted(TERMINAL)), 1), else_=0)
        with self._read() as conn:
            total, done = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(finished), 0)).where(
                    jobs_t.c.batch == batch
                )
            ).one()
        return int(total), int(done)

    def batch_finished(
        self, batch: str, since: float | None = None
    ) -> list[tuple[str, str | None, float]]:
        """(job id, row key, finish time) of the finished jobs of ``batch``: those finished
        at or after ``since`` (by the clocks of the machines that finished them), or all."""
        query = sa.select(jobs_t.c.id, jobs_t.c.row_key, jobs_t.c.finished_at).where(
            jobs_t.c.batch == batch, jobs_t.c.state.in_(sorted(TERMINAL))
        )
        if since is not None:
            query = query.where(jobs_t.c.finished_at >= since)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [(str(i), key, float(at or 0.0)) for i, key, at in rows]

    def batch_counts(self, batch: str) -> dict[str, int]:
        """Jobs of ``batch`` in each state (every state present, 0 if none)."""
        counts = Counter(self.batch_states(batch).values())
        return {state: counts.get(state, 0) for state in STATES}

    def batch_jobs(self, job_ids: Collection[str]) -> list[tuple[JobRecord, list[str]]]:
        """These jobs, each with the paths of its output files (as written)."""
        ids = sorted(job_ids)
        out: list[tuple[JobRecord, list[str]]] = []
        with self._read() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                jobs = [
                    _job(r) for r in conn.execute(sa.select(jobs_t).where(jobs_t.c.id.in_(chunk)))
                ]
                paths: dict[str, list[str]] = {}
                for job_id, path in conn.execute(
                    sa.select(files_t.c.job_id, files_t.c.path)
                    .where(files_t.c.job_id.in_(chunk))
                    .order_by(files_t.c.path)
                ):
                    paths.setdefault(str(job_id), []).append(str(path))
                out += [(job, paths.get(job.id, [])) for job in jobs]
        return out

    def batch_outputs(
        self, batch: str, row_keys: Collection[str], output: str
    ) -> list[tuple[str, list[FileRecord]]]:
        """The succeeded rows of ``batch`` among ``row_keys`` whose outputs went to
        ``output`` (their target's place): each job's id with its files' records (a row
        changed since is another job, writing the same names: it is not among them)."""
        keys = set(row_keys)
        query = sa.select(jobs_t.c.id, jobs_t.c.row_key, jobs_t.c.target).where(
            jobs_t.c.batch == batch, jobs_t.c.state == "succeeded"
        )
        found: dict[str, list[FileRecord]] = {}
        with self._read() as conn:
            for job_id, row_key, target in conn.execute(query):
                if row_key in keys and _output_of(target) == output:
                    found[str(job_id)] = []
            ids = sorted(found)
            for start in range(0, len(ids), 500):
                files = sa.select(files_t).where(files_t.c.job_id.in_(ids[start : start + 500]))
                for row in conn.execute(files.order_by(files_t.c.path)):
                    found[str(row._mapping["job_id"])].append(_file(row))
        return list(found.items())

    def redo_batch_jobs(self, batch: str, job_ids: Collection[str]) -> set[str]:
        """Queue again, as new, the rows of ``batch`` among ``job_ids`` that are still
        succeeded (their files went missing or were damaged; a row claimed meanwhile is
        left alone), forgetting their files' records; their ids."""
        ids = sorted(job_ids)
        again: set[str] = set()
        with self._write() as conn:
            for start in range(0, len(ids), 500):
                redone = conn.execute(
                    sa.update(jobs_t)
                    .where(
                        jobs_t.c.id.in_(ids[start : start + 500]),
                        jobs_t.c.batch == batch,
                        jobs_t.c.state == "succeeded",
                    )
                    .values({**_AS_NEW, "outputs": "[]", "updated_at": self.clock()})
                    .returning(jobs_t.c.id)
                ).scalars()
                chunk = [str(i) for i in redone]
                if chunk:
                    conn.execute(sa.delete(files_t).where(files_t.c.job_id.in_(chunk)))
                    again.update(chunk)
            if again:
                self._notify(conn)
        return again

    def job_target(self, job_id: str) -> str | None:
        """Where the job's owner wants its outputs (a batch row's), or None (the storage's)."""
        with self._read() as conn:
            value = conn.execute(sa.select(jobs_t.c.target).where(jobs_t.c.id == job_id)).scalar()
        return None if value is None else str(value)

    def retry_batch(self, batch: str) -> int:
        """Queue again the rows of ``batch`` that failed or were cancelled (not the rows that
        cannot run: they have no target), as new: no attempts, no error; how many."""
        now = self.clock()
        with self._write() as conn:
            again = conn.execute(
                sa.update(jobs_t)
                .where(
                    jobs_t.c.batch == batch,
                    jobs_t.c.state.in_(("failed", "cancelled")),
                    jobs_t.c.target.is_not(None),
                )
                .values({**_AS_NEW, "updated_at": now})
            ).rowcount
            if again:
                self._notify(conn)
        return int(again or 0)

    def cancel_batch(self, batch: str) -> tuple[int, int]:
        """Cancel a batch: its queued jobs at once, its running ones by their workers
        (``cancel_requested``); (cancelled now, asked to cancel)."""
        now = self.clock()
        error = json.dumps({"type": "cancelled", "message": "the batch was cancelled"})
        of_batch = jobs_t.c.batch == batch
        with self._write() as conn:
            now_cancelled = conn.execute(
                sa.update(jobs_t)
                .where(of_batch, jobs_t.c.state == "queued")
                .values(
                    state="cancelled",
                    cancel_requested=True,
                    error=error,
                    updated_at=now,
                    finished_at=now,
                )
            ).rowcount
            asked = conn.execute(
                sa.update(jobs_t)
                .where(of_batch, jobs_t.c.state == "running")
                .values(cancel_requested=True, updated_at=now)
            ).rowcount
        return int(now_cancelled or 0), int(asked or 0)

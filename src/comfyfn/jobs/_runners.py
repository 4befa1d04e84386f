"""The runners' side of the job store: claiming jobs, heartbeats, handing jobs back, and
the registry of runners (``cfn_workers``), as the methods of
:class:`comfyfn.jobs.store.Store` (which provides the transactions and the clock). The
claim protocol and fencing are described in :mod:`comfyfn.jobs.store`.

A runner registers itself (:meth:`RunnerStore.register_worker`: name, host, pid, its
servers with the models loaded on each, free slots) at start and at every heartbeat, and
removes itself on a graceful stop; a runner killed stays listed with its last heartbeat
(``comfyfn workers`` shows it stale) until one of the same name starts again or
:meth:`RunnerStore.forget_workers` drops it.

Batch rows are jobs too (``key_id`` :data:`BATCH_KEY`): claimed here like API jobs; the
batches' own queries are in :mod:`comfyfn.jobs._batches`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from comfyfn.jobs.schema import (
    Claim,
    JobRecord,
    WorkerRecord,
    _job,
    _worker,
    jobs_t,
    workers_t,
)

__all__ = ["BATCH_KEY", "NOTIFY_CHANNEL", "RunnerStore", "cancel_queued", "fenced"]

#: the ``key_id`` of a batch's jobs: no API key's (those are ``key_…``), so no caller sees them
BATCH_KEY = "batch"

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


def cancel_queued(which: sa.ColumnElement[bool], message: str, now: float) -> sa.Update:
    """The UPDATE that ends the queued jobs ``which`` selects as ``cancelled`` (``message``
    its error): no worker holds them, so none is running them."""
    return (
        sa.update(jobs_t)
        .where(which, jobs_t.c.state == "queued")
        .values(
            state="cancelled",
            cancel_requested=True,
            error=json.dumps({"type": "cancelled", "message": message}),
            updated_at=now,
            finished_at=now,
        )
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

"""The job store: API keys, jobs, output files and one persistent secret.

SQLAlchemy 2 Core (no ORM) on a synchronous engine, SQLite (embedded) or PostgreSQL (shared
by replicas): see :mod:`comfyfn.jobs.database` for how each is opened.

Schema (created on first use; ``cfn_`` prefixed so the tables can live in a shared database;
times are float epoch seconds from the writing process's clock, so replicas need NTP-synced
clocks, and ``stale_after`` should be well above any skew)::

    cfn_meta   key PK, value                      -- "secret" (hex)
    cfn_keys   id PK "key_…", name, prefix, hash, rate, created_at, revoked, max_priority
               index(prefix); unique(name) WHERE NOT revoked
    cfn_jobs   id PK "job_…", key_id, workflow, params (JSON text), state, server, prompt_id,
               progress, error (JSON text), outputs (JSON text: file ids), webhook,
               idempotency_key, created_at, updated_at, started_at, finished_at,
               claimed_by, heartbeat_at, cancel_requested, attempts, priority,
               claims (the claim counter), models (model set digest),
               batch, target, row_key (a named batch's rows: :mod:`._batches`),
               executed, turnaround (a success's run times)
               unique(key_id, idempotency_key)   -- NULLs never collide
               index(state, created_at), index(state, heartbeat_at), index(key_id, created_at),
               index(priority, created_at) WHERE state = 'queued'   -- the queue alone
               index(batch, state, finished_at)   -- following a batch
    cfn_files  id PK "file_…", job_id → cfn_jobs.id, path, content_type, size, etag, created_at
    cfn_workers  name PK, host, pid, started_at, heartbeat_at, free_slots, servers (JSON)
    cfn_alembic_version  version_num      -- the schema revision (:mod:`.database`)

API keys: :mod:`comfyfn.jobs._keys` (the :class:`Store` has its methods).

Claim protocol (how workers of one or several replicas share the queue):

1. :meth:`Store.claim_jobs` (:meth:`Store.claim_job` for one) runs one write transaction that
   picks the ``queued`` jobs with the highest ``priority``, then those whose ``models`` are
   loaded on one of the claimer's servers, then the oldest; or, failing those, the
   ``running`` jobs with the oldest ``heartbeat_at`` older than ``stale_after`` seconds
   (their worker died or paused), and sets ``state='running'``, ``claimed_by=worker``,
   ``claims=claims+1``, ``heartbeat_at=now``, ``started_at`` (if unset).
   On PostgreSQL the pick is ``SELECT … FOR UPDATE SKIP LOCKED``: concurrent claimers skip rows
   another transaction holds, and a row changed by a claimer that committed meanwhile is
   re-checked against the WHERE clause, so no two claimers get the same job. On SQLite
   ``BEGIN IMMEDIATE`` serialises the whole pick-and-update against every other writer. The
   UPDATE repeats the state condition as a last guard. A look that finds nothing to claim
   takes no write lock. :meth:`Store.create_job` with ``claim_for`` creates a job already
   claimed, in the same state, when no job is queued ahead of it.
2. The worker calls :meth:`Store.heartbeat` every few seconds (well under ``stale_after``) for
   all the jobs it holds, :meth:`Store.update_job` with progress and the final state, and
   :meth:`Store.complete_job` for a success (its files and its state in one transaction).
   Fencing: each of these writes names the worker's :class:`Claim` (``claimed_by`` and the
   ``claims`` counter it claimed at); a job taken over since has another counter, so the
   stale write matches no row, changes nothing and raises :class:`StaleClaim` (a heartbeat
   returns the jobs it lost): the stale worker drops the job without a word.
3. A taken-over job keeps ``server`` and ``prompt_id``: the new worker re-attaches to the prompt
   already queued on that ComfyUI server instead of submitting it twice. The same holds for a
   job handed back by :meth:`Store.release_job` (graceful shutdown). A worker that lost a job
   (:class:`StaleClaim`) stops writing to it.
4. :meth:`Store.request_cancel` only sets ``cancel_requested``; the worker that claims or holds
   the job sees it and finishes the job as ``cancelled`` (a cancelled queued job is still handed
   out by :meth:`Store.claim_job`, so that one place finishes it and sends its webhook).
5. On PostgreSQL a job entering the queue (created, handed back, requeued) sends
   ``NOTIFY cfn_jobs`` with its commit: idle workers listening (:mod:`.listen`) claim at
   once instead of at their next poll.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from comfyfn.jobs._batches import BatchStore
from comfyfn.jobs._keys import KeyStore
from comfyfn.jobs._runners import BATCH_KEY, NOTIFY_CHANNEL, cancel_queued, fenced
from comfyfn.jobs.database import SQLITE_BUSY_TIMEOUT, Database
from comfyfn.jobs.schema import (
    JSON_FIELDS,
    STATES,
    TERMINAL,
    UPDATABLE,
    Claim,
    FileRecord,
    JobRecord,
    KeyRecord,
    NewFile,
    StaleClaim,
    WorkerRecord,
    _file,
    _job,
    _new_id,
    files_t,
    jobs_t,
    meta_t,
)

__all__ = [
    "BATCH_KEY",
    "NOTIFY_CHANNEL",
    "STATES",
    "TERMINAL",
    "Claim",
    "FileRecord",
    "JobRecord",
    "KeyRecord",
    "NewFile",
    "StaleClaim",
    "Store",
    "WorkerRecord",
]


class Store(KeyStore, BatchStore):
    """The job store on ``url`` (a SQLAlchemy URL; see the module docstring).

    Thread-safe: every method runs in its own short transaction on a pooled connection.
    ``busy_timeout`` (SQLite only): seconds a statement waits for another writer's lock
    before it fails with ``sqlalchemy.exc.OperationalError`` ("database is locked").
    ``clock``: the epoch time every timestamp is taken from (tests pass a fake one).
    """

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = SQLITE_BUSY_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = Database(url, busy_timeout=busy_timeout)
        self.url, self.busy_timeout = self.database.url, busy_timeout
        self.clock = clock
        self._write, self._read = self.database.write, self.database.read
        self.dialect = self.database.dialect
        self._secret: bytes | None = None

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        key_id: str,
        workflow: str,
        params: dict[str, Any],
        webhook: str | None = None,
        idempotency_key: str | None = None,
        claim_for: str | None = None,
        priority: int = 0,
        models: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """A new queued job, or with an idempotency key this key_id used before: (that job, False).

        ``claim_for``: a worker with a free slot; if no job is queued ahead, the new job is
        created claimed by it (``running``, as :meth:`claim_job` would leave it), in the same
        transaction. Race-safe: the (key_id, idempotency_key) pair is a unique constraint, and
        the loser of a concurrent insert reads the winner's job.
        """
        now = self.clock()
        encoded = json.dumps(params)
        job = JobRecord(
            id=_new_id("job"),
            key_id=key_id,
            workflow=workflow,
            params=json.loads(encoded),  # the stored form, as get_job gives it back
            state="queued",
            server=None,
            prompt_id=None,
            progress=0.0,
            error=None,
            outputs=[],
            webhook=webhook,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None,
            claimed_by=None,
            heartbeat_at=None,
            cancel_requested=False,
            attempts=0,
            priority=priority,
            models=models,
        )
        same = sa.select(jobs_t).where(
            jobs_t.c.key_id == key_id, jobs_t.c.idempotency_key == idempotency_key
        )
        try:
            with self._write() as conn:
                if idempotency_key is not None:
                    row = conn.execute(same).first()
                    if row is not None:
                        return _job(row), False
                if claim_for is not None and not self._queued(conn):
                    job = dataclasses.replace(
                        job,
                        state="running",
                        claimed_by=claim_for,
                        claims=1,
                        heartbeat_at=now,
                        started_at=now,
                    )
                row_values = {**job.__dict__, "params": encoded, "outputs": "[]"}
                conn.execute(sa.insert(jobs_t).values(**row_values))
                if job.state == "queued":
                    self._notify(conn)
            return job, True
        except IntegrityError:
            if idempotency_key is None:
                raise
            with self._read() as conn:
                row = conn.execute(same).first()
            if row is None:
                raise
            return _job(row), False

    @staticmethod
    def _queued(conn: Connection) -> bool:
        """Whether any job is queued."""
        return (
            conn.execute(sa.select(jobs_t.c.id).where(jobs_t.c.state == "queued").limit(1)).first()
            is not None
        )

    def get_job(self, job_id: str, key_id: str | None = None) -> JobRecord | None:
        """The job, or None; with ``key_id`` only if it is that key's job."""
        query = sa.select(jobs_t).where(jobs_t.c.id == job_id)
        if key_id is not None:
            query = query.where(jobs_t.c.key_id == key_id)
        with self._read() as conn:
            row = conn.execute(query).first()
        return _job(row) if row is not None else None

    def list_jobs(
        self, key_id: str, *, before: float | None = None, state: str | None = None, limit: int
    ) -> list[JobRecord]:
        """Up to ``limit`` of the key's jobs created before ``before`` (epoch seconds; None:
        any), in ``state`` if given, newest first (index ``cfn_jobs_key``)."""
        query = sa.select(jobs_t).where(jobs_t.c.key_id == key_id)
        if before is not None:
            query = query.where(jobs_t.c.created_at < before)
        if state is not None:
            query = query.where(jobs_t.c.state == state)
        query = query.order_by(jobs_t.c.created_at.desc(), jobs_t.c.id.desc()).limit(limit)
        with self._read() as conn:
            return [_job(row) for row in conn.execute(query)]

    def update_job(self, job_id: str, *, fence: Claim | None = None, **fields: Any) -> JobRecord:
        """Set fields of a job (any but id/key_id/created_at/updated_at); returns the new record.

        ``updated_at`` becomes now; ``finished_at`` becomes now when the state changes to a
        terminal one (unless given); ``started_at`` becomes now when the state changes to
        ``running`` and it was unset. ``KeyError`` if there is no such job; with ``fence``
        (a worker's claim), :class:`StaleClaim` if the claim is no longer the job's.
        """
        values = self._job_values(fields)
        with self._write() as conn:
            job = self._update(conn, job_id, values, fence)
            if job.state == "queued":
                self._notify(conn)
            return job

    def complete_job(
        self, job_id: str, files: Sequence[NewFile], *, fence: Claim | None = None, **fields: Any
    ) -> tuple[JobRecord, tuple[FileRecord, ...]]:
        """Record the job's output files and set its fields (``outputs``: the files' ids) in
        one transaction; the new job record and the files' records. With ``fence``, a stale
        claim records nothing (:class:`StaleClaim`)."""
        records = tuple(self._file_record(job_id, f) for f in files)
        values = self._job_values({**fields, "outputs": [r.id for r in records]})
        with self._write() as conn:
            job = self._update(conn, job_id, values, fence)
            for record in records:
                conn.execute(sa.insert(files_t).values(**record.__dict__))
            return job, records

    def _job_values(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``update_job``'s fields as column values (checked, JSON encoded, timestamps set)."""
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise TypeError(f"update_job cannot set {', '.join(sorted(unknown))}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"state {fields['state']!r} is not one of {', '.join(STATES)}")
        now = self.clock()
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "outputs":
                value = json.dumps(list(value))
            elif name in JSON_FIELDS:
                value = None if value is None else json.dumps(value)
            values[name] = value
        values["updated_at"] = now
        state = fields.get("state")
        if state in TERMINAL and "finished_at" not in fields:
            # SET expressions see the row as it was: keep finished_at if it already ended so
            values["finished_at"] = sa.case(
                (jobs_t.c.state.in_(sorted(TERMINAL)), jobs_t.c.finished_at), else_=now
            )
        if state == "running" and "started_at" not in fields:
            values["started_at"] = sa.func.coalesce(jobs_t.c.started_at, now)
        return values

    @staticmethod
    def _update(
        conn: Connection, job_id: str, values: dict[str, Any], fence: Claim | None = None
    ) -> JobRecord:
        where = fenced(job_id, fence) if fence is not None else jobs_t.c.id == job_id
        row = conn.execute(
            sa.update(jobs_t).where(where).values(**values).returning(*jobs_t.c)
        ).first()
        if row is None:
            raise StaleClaim(job_id) if fence is not None else KeyError(job_id)
        return _job(row)

    def request_cancel(self, job_id: str) -> None:
        """Ask for a queued or running job to be cancelled (its worker does it)."""
        with self._write() as conn:
            conn.execute(
                sa.update(jobs_t)
                .where(jobs_t.c.id == job_id, jobs_t.c.state.in_(("queued", "running")))
                .values(cancel_requested=True, updated_at=self.clock())
            )

    def cancel_if_queued(self, job_id: str) -> JobRecord | None:
        """Cancel a job that no worker has claimed yet (atomic: never one being claimed);
        the cancelled job, or None if it was not queued."""
        update = cancel_queued(jobs_t.c.id == job_id, "removed from the queue", self.clock())
        with self._write() as conn:
            row = conn.execute(update.returning(*jobs_t.c)).first()
        return _job(row) if row is not None else None

    def cancel_requests(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these jobs someone asked to cancel (one query for a worker's jobs)."""
        ids = list(job_ids)
        if not ids:
            return set()
        with self._read() as conn:
            rows = conn.execute(
                sa.select(jobs_t.c.id).where(
                    jobs_t.c.id.in_(ids), jobs_t.c.cancel_requested == sa.true()
                )
            )
            return {str(r[0]) for r in rows}

    def queue_depth(self) -> dict[str, int]:
        """Number of jobs in each state (every state present, 0 if none)."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(jobs_t.c.state, sa.func.count()).group_by(jobs_t.c.state)
            ).all()
        depth = dict.fromkeys(STATES, 0)
        depth.update({state: int(n) for state, n in rows})
        return depth

    def queued_by_workflow(self) -> list[tuple[str, int, int]]:
        """(workflow, priority, queued jobs) for every pair with queued jobs (what an
        autoscaler reads): one look at the queue's own index."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(jobs_t.c.workflow, jobs_t.c.priority, sa.func.count())
                .where(jobs_t.c.state == "queued")
                .group_by(jobs_t.c.workflow, jobs_t.c.priority)
            ).all()
        return [(str(w), int(p), int(n)) for w, p, n in rows]

    def ping(self) -> None:
        """One round trip to the database (raises if it does not answer)."""
        with self._read() as conn:
            conn.execute(sa.select(1))

    def queue_position(self, job_id: str) -> int | None:
        """How many queued jobs of the same API key will be claimed before this one (0: none),
        or None if it is not queued: what a key is told never counts other keys' jobs. Claim
        order: highest ``priority``, then oldest ``created_at``, then ``id``."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(
                    jobs_t.c.priority, jobs_t.c.created_at, jobs_t.c.id, jobs_t.c.key_id
                ).where(jobs_t.c.id == job_id, jobs_t.c.state == "queued")
            ).first()
            if row is None:
                return None
            priority, created, ident, key_id = row
            same = jobs_t.c.priority == priority
            ahead = conn.execute(
                sa.select(sa.func.count())
                .select_from(jobs_t)
                .where(
                    jobs_t.c.state == "queued",
                    jobs_t.c.key_id == key_id,
                    sa.or_(
                        jobs_t.c.priority > priority,
                        sa.and_(same, jobs_t.c.created_at < created),
                        sa.and_(same, jobs_t.c.created_at == created, jobs_t.c.id < ident),
                    ),
                )
            ).scalar()
        return int(ahead or 0)

    # -- files ---------------------------------------------------------------------------------

    def add_file(
        self, *, job_id: str, path: str, content_type: str, size: int, etag: str
    ) -> FileRecord:
        record = self._file_record(job_id, NewFile(path, content_type, size, etag))
        with self._write() as conn:
            conn.execute(sa.insert(files_t).values(**record.__dict__))
        return record

    def _file_record(self, job_id: str, new: NewFile) -> FileRecord:
        return FileRecord(
            id=_new_id("file"),
            job_id=job_id,
            path=new.path,
            content_type=new.content_type,
            size=int(new.size),
            etag=new.etag,
            created_at=self.clock(),
        )

    def get_file(self, file_id: str) -> FileRecord | None:
        with self._read() as conn:
            row = conn.execute(sa.select(files_t).where(files_t.c.id == file_id)).first()
        return _file(row) if row is not None else None

    # -- the signing secret --------------------------------------------------------------------

    def secret(self) -> bytes:
        """32 random bytes made on first use and kept in the database (shared by replicas)."""
        if self._secret is not None:
            return self._secret
        query = sa.select(meta_t.c.value).where(meta_t.c.key == "secret")
        with self._read() as conn:
            value = conn.execute(query).scalar()
        if value is None:
            try:
                with self._write() as conn:
                    value = conn.execute(query).scalar()
                    if value is None:
                        value = secrets.token_hex(32)
                        conn.execute(sa.insert(meta_t).values(key="secret", value=value))
            except IntegrityError:  # another replica made it first
                with self._read() as conn:
                    value = conn.execute(query).scalar()
        self._secret = bytes.fromhex(str(value))
        return self._secret

"""Named batches in the job store, as the methods of :class:`comfyfn.jobs.store.Store`.

A named batch (``comfyfn batch FILE --db …``) is a set of jobs with the same ``batch``
column, owned by no API key (``key_id`` :data:`~comfyfn.jobs._runners.BATCH_KEY`): one per
row, keyed by the row's content (``row_key``), so enqueuing the same file again adds nothing
(:meth:`BatchStore.add_batch_jobs`); ``target`` says where a worker writes the outputs. A
worker claims batch rows as it claims API jobs (:mod:`comfyfn.jobs._runners`); here are the
batches' own reads and writes: enqueue, follow, count, cancel, queue again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from comfyfn.fleet import QueuedRow
from comfyfn.jobs._runners import BATCH_KEY, RunnerStore, cancel_queued
from comfyfn.jobs.schema import (
    MAX_PRIORITY,
    STATES,
    TERMINAL,
    FileRecord,
    JobRecord,
    _file,
    _job,
    _new_id,
    files_t,
    jobs_t,
    models_key,
)

__all__ = ["MAX_BATCH_NAME", "BatchStore"]

MAX_BATCH_NAME = 200  #: the ``batch`` column's width


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
        of_batch = jobs_t.c.batch == batch
        with self._write() as conn:
            now_cancelled = conn.execute(
                cancel_queued(of_batch, "the batch was cancelled", now)
            ).rowcount
            asked = conn.execute(
                sa.update(jobs_t)
                .where(of_batch, jobs_t.c.state == "running")
                .values(cancel_requested=True, updated_at=now)
            ).rowcount
        return int(now_cancelled or 0), int(asked or 0)

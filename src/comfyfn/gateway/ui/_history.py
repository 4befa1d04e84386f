"""A key's past jobs, newest first, a page at a time (the ``/v1`` API has no list route).

Read-only, on the store's own read connection and tables (index ``cfn_jobs_key``:
``key_id, created_at``); the natural home of :func:`_select` is a ``Store.list_jobs``."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.schema import JobRecord, KeyRecord, _job, jobs_t
from comfyfn.gateway.service import load_files
from comfyfn.gateway.store import Store

__all__ = ["PAGE", "key_jobs"]

PAGE = 50  #: jobs per page, at most


def _select(
    store: Store, key_id: str, *, before: float | None, state: str | None, limit: int
) -> list[JobRecord]:
    query = sa.select(jobs_t).where(jobs_t.c.key_id == key_id)
    if before is not None:
        query = query.where(jobs_t.c.created_at < before)
    if state is not None:
        query = query.where(jobs_t.c.state == state)
    query = query.order_by(jobs_t.c.created_at.desc(), jobs_t.c.id.desc()).limit(limit)
    with store.database.read() as conn:
        return [_job(row) for row in conn.execute(query)]


async def key_jobs(
    runtime: Runtime, key: KeyRecord, *, before: float | None, state: str | None, limit: int
) -> list[JobRecord]:
    """Up to ``limit`` of ``key``'s jobs created before ``before`` (epoch seconds; None: now),
    in ``state`` if given, newest first, with their outputs' records known here."""
    found = await asyncio.to_thread(
        _select, runtime.store, key.id, before=before, state=state, limit=limit
    )
    for job in found:
        await load_files(runtime, job)
    return found

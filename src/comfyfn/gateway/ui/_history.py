"""A key's past jobs, newest first, a page at a time (the ``/v1`` API has no list route):
:meth:`comfyfn.jobs.Store.list_jobs`, with their outputs' records."""

from __future__ import annotations

import asyncio

from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.service import load_files
from comfyfn.jobs import JobRecord, KeyRecord

__all__ = ["PAGE", "key_jobs"]

PAGE = 50  #: jobs per page, at most


async def key_jobs(
    runtime: Runtime, key: KeyRecord, *, before: float | None, state: str | None, limit: int
) -> list[JobRecord]:
    """Up to ``limit`` of ``key``'s jobs created before ``before`` (epoch seconds; None: now),
    in ``state`` if given, newest first, with their outputs' records known here."""
    found = await asyncio.to_thread(
        runtime.store.list_jobs, key.id, before=before, state=state, limit=limit
    )
    for job in found:
        await load_files(runtime, job)
    return found

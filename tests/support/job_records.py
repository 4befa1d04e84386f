"""Gateway job records for tests: a queued job with every field set, changed where asked."""

from __future__ import annotations

import dataclasses
from typing import Any

from comfyfn.jobs.schema import JobRecord

QUEUED = JobRecord(
    id="job_1",
    key_id="key_1",
    workflow="w",
    params={},
    state="queued",
    server=None,
    prompt_id=None,
    progress=0.0,
    error=None,
    outputs=[],
    webhook=None,
    idempotency_key=None,
    created_at=1.0,
    updated_at=1.0,
    started_at=None,
    finished_at=None,
    claimed_by=None,
    heartbeat_at=None,
    cancel_requested=False,
)


def job_record(job_id: str = "job_1", **fields: Any) -> JobRecord:
    """:data:`QUEUED` with id ``job_id`` and ``fields`` changed."""
    return dataclasses.replace(QUEUED, id=job_id, **fields)

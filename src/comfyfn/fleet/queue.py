"""What the shared job queue holds for a row of a batch: the contract between the batch
that enqueues it (:func:`comfyfn.batch.queued.enqueue`) and the job store
(:mod:`comfyfn.jobs`) that keeps it until a worker runs it. Neither imports the other;
both import this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["QueuedRow"]


@dataclass(frozen=True)
class QueuedRow:
    """One row of a batch, as the shared queue holds it."""

    row_key: str  #: the row's content key: the same row is the same job
    workflow: str
    params: dict[str, Any]  #: the bound graph and what the report shows
    target: str | None  #: where its outputs go (None for a row that cannot run)
    priority: int = 0
    models: frozenset[tuple[str, str]] = frozenset()  #: (folder, file) of each model it loads
    error: dict[str, Any] | None = None  #: a row that cannot run: stored failed at once

"""A batch through the shared job store, start to end, as ``comfyfn batch … --db`` runs it
and a Python caller can: open the store, enqueue the rows as one named batch (remaking done
rows whose files went missing), run a worker here if asked, and follow the batch::

    from comfyfn.batch.shared import open_shared_batch
    async with open_shared_batch(db, "nightly", "s3://bucket/out", rows=rows,
                                 workflow=wf, work_on=["http://127.0.0.1:8188"]) as shared:
        async for result in shared.batch.results():
            ...
        summary, sheet = shared.batch.report(Path("report/"), counted)

The pieces are :mod:`comfyfn.batch.queued` (enqueue, follow) and :class:`comfyfn.jobs.Worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

from comfyfn.batch.queued import (
    RESULT_STATE,
    QueuedBatch,
    enqueue,
    load_workflow,
    requeue_damaged,
)
from comfyfn.batch.rows import Row, RowError
from comfyfn.batch.runner import BatchSettings
from comfyfn.client import AsyncClient, WorkflowSource, public_url
from comfyfn.errors import ConfigError, ServerUnreachable, TransportError
from comfyfn.jobs import Store, Worker, unavailable
from comfyfn.workflow import Workflow

__all__ = ["SharedBatch", "open_shared_batch"]


@dataclass
class SharedBatch:
    """A batch open in the job store: ``batch`` follows it; ``worker`` runs it here (None:
    the workers of other machines do). After an enqueue: the rows' keys, how many jobs were
    new, and why each done row was queued again (its files missing or damaged)."""

    name: str
    batch: QueuedBatch
    worker: Worker | None = None
    keys: set[str] | None = None  #: None: following a batch enqueued before
    added: int = 0
    redone: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def open_shared_batch(
    db: str,
    name: str,
    output: str,
    *,
    rows: Iterable[Row | RowError] | None = None,
    workflow: WorkflowSource | Workflow | None = None,
    settings: BatchSettings | None = None,
    work_on: Sequence[str] = (),
) -> AsyncIterator[SharedBatch]:
    """Batch ``name`` in the store at ``db``, for the ``async with``. With ``rows`` (and
    their ``workflow``): enqueued first, their outputs to ``output`` (a folder every worker
    sees at that path, or an ``s3://`` URL); without: a batch the store already holds
    (:class:`~comfyfn.errors.ConfigError` if none by that name). With ``work_on``: a worker
    of this batch only, on those servers, with ``settings``' placement and retries; it hands
    its jobs back to the queue when the block ends early. The workflow is loaded with the
    node definitions of the first of those servers that answers (blueprints, templates and
    custom nodes as it serves them), else with the bundled ones."""
    settings = settings or BatchSettings()
    with Store(db) as store:
        shared = SharedBatch(name, QueuedBatch(store, name, transient=unavailable))
        if rows is not None:
            if workflow is None:
                raise ConfigError("rows to enqueue need their workflow")
            loaded = await _load(workflow, work_on)
            shared.keys, shared.added = await enqueue(
                store, name, rows, loaded, output, variables=settings.variables
            )
            shared.redone = await requeue_damaged(store, name, output, shared.keys)
            shared.batch.keys = shared.keys
        states = await asyncio.to_thread(store.batch_states, name, shared.keys)
        if not states and rows is None:
            raise ConfigError(f"batch {name!r}: the store holds no batch of that name")
        # before any worker here starts: the rows done by an earlier run are the skipped ones
        shared.batch.done_before = {i for i, state in states.items() if state in RESULT_STATE}
        async with _worker(store, name, settings, work_on) as shared.worker:
            if shared.worker is not None:
                shared.batch.servers = tuple(shared.worker.settings.servers)
                shared.batch.pool = shared.worker.fleet.pool
                shared.worker.fleet.on_health = functools.partial(_health, shared.batch)
            yield shared


async def _load(source: WorkflowSource | Workflow, servers: Sequence[str]) -> Workflow:
    """``source`` typed by the first of ``servers`` that answers; with none given, by the
    bundled definitions (a worker checks the bound graph against its own server)."""
    if isinstance(source, Workflow) or not servers:
        return load_workflow(source)
    failures = []
    for url in servers:
        try:
            async with AsyncClient(url) as client:
                return await client.workflow(source)
        except TransportError as exc:
            failures.append(f"{public_url(url)}: {exc}")
    raise ServerUnreachable(
        "none of the servers to work on gave its node definitions: " + "; ".join(failures)
    )


def _health(batch: QueuedBatch, url: str, up: bool) -> None:
    """A server of the worker here went down or came back: said as a batch run says it."""
    batch.on_event("server_up" if up else "server_down", url)


@contextlib.asynccontextmanager
async def _worker(
    store: Store, name: str, settings: BatchSettings, servers: Sequence[str]
) -> AsyncIterator[Worker | None]:
    if not servers:
        yield None
        return
    worker_id = f"{socket.gethostname()}-{os.getpid()}-batch"
    worker = Worker(store, settings.worker(servers, worker_id), only_batch=name)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()

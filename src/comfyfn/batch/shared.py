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
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

from comfyfn.batch.queued import (
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
from comfyfn.workflow import Workflow, server_source

__all__ = ["SharedBatch", "open_shared_batch"]

log = logging.getLogger("comfyfn.batch")


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
    custom nodes as it serves them), else with the bundled ones (see :func:`_load`)."""
    settings = settings or BatchSettings()
    loaded = None
    if rows is not None:  # (before the store is opened: a bad workflow leaves nothing made)
        if workflow is None:
            raise ConfigError("rows to enqueue need their workflow")
        loaded = await _load(workflow, work_on, settings.http_timeout)
    with Store(db) as store:
        shared = SharedBatch(name, QueuedBatch(store, name, transient=unavailable))
        # before this run changes anything: the rows finished then (and still, when read)
        # are the skipped ones, whatever a worker here or elsewhere finishes from now on
        finished = await asyncio.to_thread(store.batch_finished, name)
        shared.batch.done_before = {job_id: at for job_id, _, at in finished}
        if loaded is not None:
            shared.keys, shared.added = await enqueue(
                store, name, rows or (), loaded, output, variables=settings.variables
            )
            shared.redone = await requeue_damaged(store, name, output, shared.keys)
            shared.batch.keys = shared.keys
        elif not await asyncio.to_thread(store.batch_states, name):
            raise ConfigError(f"batch {name!r}: the store holds no batch of that name")
        async with _worker(store, name, settings, work_on, shared.batch) as shared.worker:
            yield shared


async def _load(
    source: WorkflowSource | Workflow, servers: Sequence[str], timeout: float
) -> Workflow:
    """``source`` typed by the first of ``servers`` (asked at once, each within ``timeout``)
    that answers; with none given, or none answering, by the bundled definitions (a worker
    checks the bound graph against its own server), but for a blueprint or template, which
    only a server has."""
    if isinstance(source, Workflow) or not servers:
        return load_workflow(source)

    async def ask(url: str) -> Workflow:
        async with AsyncClient(url, timeout=timeout) as client:
            return await client.workflow(source)

    answers = await asyncio.gather(*map(ask, servers), return_exceptions=True)
    for answer in answers:
        if isinstance(answer, Workflow):
            return answer
    for answer in answers:  # a server answered, refusing (no such blueprint, a bad graph)
        if isinstance(answer, BaseException) and not isinstance(answer, TransportError):
            raise answer
    unreached = ", ".join(public_url(url) for url in servers)
    if server_source(source) is not None:
        raise ServerUnreachable(f"{source}: none of the servers to work on answered ({unreached})")
    log.warning(
        "none of %s answered: the workflow is typed with the bundled definitions", unreached
    )
    return load_workflow(source)


@contextlib.asynccontextmanager
async def _worker(
    store: Store, name: str, settings: BatchSettings, servers: Sequence[str], batch: QueuedBatch
) -> AsyncIterator[Worker | None]:
    """A worker of batch ``name`` on ``servers`` (none without), whose servers' health
    ``batch`` says (those down from the start too: :meth:`QueuedBatch.server_health`)."""
    if not servers:
        yield None
        return
    worker_id = f"{socket.gethostname()}-{os.getpid()}-batch"
    worker = Worker(store, settings.worker(servers, worker_id), only_batch=name)
    worker.fleet.on_health = batch.server_health
    batch.servers, batch.pool = tuple(servers), worker.fleet.pool
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()

"""``comfyfn batch … --db URL``: a batch through the shared job store — enqueued once,
followed from any shell (progress, summary, results.csv, contact sheet), worked by the
workers of every machine (and with ``--work`` by one in this process); ``comfyfn batch
status NAME`` and ``comfyfn batch cancel NAME``. See :mod:`comfyfn.batch.queued`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from comfyfn.batch import BatchSettings, Row, RowError
from comfyfn.cli._common import err, esc
from comfyfn.cli._progress import BatchProgress
from comfyfn.errors import ConfigError

if TYPE_CHECKING:
    from comfyfn.jobs import Store, Worker

__all__ = [
    "CONTROLS",
    "QueueDb",
    "QueueName",
    "QueueWork",
    "QueuedRun",
    "check_queue_args",
    "control_batch",
    "run_queued",
]

#: ``comfyfn batch status NAME`` / ``cancel NAME`` / ``retry NAME``
CONTROLS = ("status", "cancel", "retry")

QueueDb = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Queue the rows in this shared job store (postgresql://…) as one named batch: "
        "`comfyfn worker`s of any machine run them; this command follows it.",
        show_default=False,
    ),
]
QueueName = Annotated[
    str | None,
    typer.Option(
        help="With --db: the batch's name (default: the file's name and a digest of -o). "
        "Alone with --db: follow that batch.",
        show_default=False,
    ),
]
QueueWork = Annotated[
    bool,
    typer.Option(
        "--work", help="With --db: also work the batch here, on --server (or the local engine)."
    ),
]


@dataclass
class QueuedRun:
    """What ``comfyfn batch --db`` does: enqueue ``rows`` (None: only follow) as batch
    ``name`` (None: named after the job file and ``output``) with outputs to ``output`` (-o:
    a folder or ``s3://`` URL), follow it and write the report into ``folder``;
    ``work_on``: servers for a worker in this process (empty: none), which runs the jobs
    with the batch's ``settings`` (prime, retries, timeouts)."""

    db: str
    name: str | None
    output: str
    folder: Path = Path()
    rows: Iterable[Row | RowError] | None = None
    workflow: Any = "zimage-turbo"
    total: int | None = None
    work_on: tuple[str, ...] = ()
    settings: BatchSettings = field(default_factory=BatchSettings)
    as_json: bool = False
    status_every: float = 30.0


def run_queued(
    run: QueuedRun, state: Path | None, source: Path | None, work_on: list[str] | None
) -> None:
    """Enqueue, follow to the end, report; exit 1 if a row failed (as a batch run). The
    outputs' place as every machine reads it (an absolute folder, or the s3 URL); the
    report's folder (-o, or --state for s3, as a batch run); with ``work_on`` (a list, maybe
    empty: the local engine) a worker here."""
    from comfyfn.batch import output_place
    from comfyfn.batch.queued import batch_name, load_workflow
    from comfyfn.cli._batch import resolve_servers

    run.folder, _ = output_place(run.output, state)
    if not run.output.startswith("s3://"):
        run.output = str(Path(run.output).resolve())
    if run.name is None:
        assert source is not None  # following needs --name (check_queue_args)
        run.name = batch_name(source, run.output)
    if work_on is not None:
        run.work_on = tuple(resolve_servers(work_on or None))

    workflow = load_workflow(run.workflow) if run.rows is not None else None
    run.folder.mkdir(parents=True, exist_ok=True)
    summary, sheet = asyncio.run(_follow(run, workflow))
    if run.as_json:
        typer.echo(summary.to_json())
    else:
        from comfyfn.cli._batch import print_summary

        print_summary(summary, sheet)
    if not summary.ok:
        raise typer.Exit(1)


async def _follow(run: QueuedRun, workflow: Any) -> Any:
    from comfyfn.batch.queued import QueuedBatch, enqueue, requeue_damaged
    from comfyfn.jobs.database import unavailable
    from comfyfn.jobs.store import Store

    assert run.name is not None
    with Store(run.db) as store:
        keys = None
        if run.rows is not None:
            keys, added = await enqueue(
                store, run.name, run.rows, workflow, run.output, variables=run.settings.variables
            )
            redone = await requeue_damaged(store, run.name, run.output, keys)
            again = f", {len(redone)} done rows queued again (files missing or damaged)"
            err.print(
                esc(
                    f"batch {run.name}: {len(keys)} rows, {added} new jobs queued"
                    f"{again if redone else ''}; follow it from anywhere with: "
                    f"comfyfn batch --db URL --name {run.name}"
                ),
                highlight=False,
                soft_wrap=True,
            )
        elif not await asyncio.to_thread(store.batch_states, run.name):
            raise ConfigError(f"--name {run.name}: the store holds no batch of that name")
        async with _worker_here(store, run) as worker:
            batch = QueuedBatch(store, run.name, keys, transient=unavailable)
            if worker is not None:
                batch.servers, batch.pool = tuple(worker.settings.servers), worker.fleet.pool
            total = len(keys) if keys is not None else run.total
            with BatchProgress(batch, total) as progress:
                batch.on_event = progress.on_event
                status = asyncio.create_task(progress.keep_saying(run.status_every))
                try:
                    async for _ in batch.results():
                        pass
                finally:
                    status.cancel()
        return batch.report(run.folder, progress.counted)


@contextlib.asynccontextmanager
async def _worker_here(store: Store, run: QueuedRun) -> AsyncIterator[Worker | None]:
    """With ``work_on``: a worker of this batch's jobs only, on those servers, for the
    ``async with`` (it hands its jobs back when it ends early)."""
    if not run.work_on or run.name is None:
        yield None
        return
    from comfyfn.jobs import Worker

    settings = run.settings.worker(run.work_on, f"{socket.gethostname()}-{os.getpid()}-batch")
    worker = Worker(store, settings, only_batch=run.name)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def control_batch(action: str, name: str | None, db: str | None) -> None:
    """``comfyfn batch status NAME`` (the counts by state), ``cancel NAME`` (queued jobs
    cancelled at once, running ones by their workers) or ``retry NAME`` (its failed and
    cancelled rows queued again)."""
    if not name or not db:
        raise ConfigError(f"comfyfn batch {action} NAME needs the batch's name and --db URL")
    from comfyfn.jobs.store import Store

    with Store(db) as store:
        counts = store.batch_counts(name)
        if not any(counts.values()):
            raise ConfigError(f"batch {name!r}: the store holds no batch of that name")
        if action == "cancel":
            now, asked = store.cancel_batch(name)
            typer.echo(
                f"batch {name}: {now} queued jobs cancelled, {asked} running ones asked to stop"
            )
            counts = store.batch_counts(name)
        elif action == "retry":
            again = store.retry_batch(name)
            typer.echo(f"batch {name}: {again} failed or cancelled jobs queued again")
            counts = store.batch_counts(name)
    total = sum(counts.values())
    shown = ", ".join(f"{state} {n}" for state, n in counts.items())
    typer.echo(f"batch {name}: {total} jobs: {shown}")


def check_queue_args(
    source: str | None,
    extra: str | None,
    db: str | None,
    name: str | None,
    server: bool,
    work: bool,
) -> None:
    """The usage errors of ``comfyfn batch`` around ``--db`` (before anything runs)."""
    if extra is not None:
        raise ConfigError(
            f"unexpected argument {extra!r}: comfyfn batch takes one job file (or: status NAME, "
            "cancel NAME, retry NAME)"
        )
    if source is None and not (db and name):
        raise ConfigError(
            "give a job file (comfyfn batch prompts.csv), or --db URL --name NAME to follow a "
            "queued batch"
        )
    if name is not None and db is None:
        raise ConfigError("--name names a batch in the shared store: give --db URL too")
    if work and db is None:
        raise ConfigError("--work runs a worker of a queued batch: give --db URL too")
    if db is not None and server and not work:
        raise ConfigError("with --db, --server is for --work (the workers run the rows)")

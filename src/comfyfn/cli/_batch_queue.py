"""``comfyfn batch … --db URL``: a batch through the shared job store — enqueued once,
followed from any shell (progress, summary, results.csv, contact sheet), worked by the
workers of every machine (and with ``--work`` by one in this process); ``comfyfn batch
status NAME`` and ``comfyfn batch cancel NAME``. See :mod:`comfyfn.batch.queued`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from comfyfn.batch import BatchSettings, Row, RowError
from comfyfn.cli._common import err, esc
from comfyfn.cli._progress import BatchProgress
from comfyfn.errors import ConfigError

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
    from comfyfn.batch.queued import batch_name
    from comfyfn.cli._batch import resolve_servers

    run.folder, _ = output_place(run.output, state)
    if not run.output.startswith("s3://"):
        run.output = str(Path(run.output).resolve())
    if run.name is None:
        assert source is not None  # following needs --name (check_queue_args)
        run.name = batch_name(source, run.output)
    if work_on is not None:
        run.work_on = tuple(resolve_servers(work_on or None))

    run.folder.mkdir(parents=True, exist_ok=True)
    summary, sheet = asyncio.run(_follow(run))
    if run.as_json:
        typer.echo(summary.to_json())
    else:
        from comfyfn.cli._batch import print_summary

        print_summary(summary, sheet)
    if not summary.ok:
        raise typer.Exit(1)


async def _follow(run: QueuedRun) -> Any:
    from comfyfn.batch.shared import open_shared_batch

    assert run.name is not None
    async with open_shared_batch(
        run.db,
        run.name,
        run.output,
        rows=run.rows,
        workflow=run.workflow if run.rows is not None else None,
        settings=run.settings,
        work_on=run.work_on,
    ) as shared:
        if shared.keys is not None:
            again = f", {len(shared.redone)} done rows queued again (files missing or damaged)"
            err.print(
                esc(
                    f"batch {run.name}: {len(shared.keys)} rows, {shared.added} new jobs queued"
                    f"{again if shared.redone else ''}; follow it from anywhere with: "
                    f"comfyfn batch --db URL --name {run.name}"
                ),
                highlight=False,
                soft_wrap=True,
            )
        batch = shared.batch
        total = len(shared.keys) if shared.keys is not None else run.total
        with BatchProgress(batch, total) as progress:
            batch.on_event = progress.on_event
            status = asyncio.create_task(progress.keep_saying(run.status_every))
            try:
                async for _ in batch.results():
                    pass
            finally:
                status.cancel()
    return batch.report(run.folder, progress.counted)


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
    warm: bool = False,
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
    if db is not None and warm and (not work or source is None):
        raise ConfigError(
            "with --db, --warm warms the servers of --work with the job file's workflow: "
            "give the file and --work"
        )

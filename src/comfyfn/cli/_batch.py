"""``comfyfn batch`` and ``comfyfn recipe``: many jobs over a pool of servers, with progress."""

from __future__ import annotations

import asyncio
import enum
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from comfyfn.batch import (
    Batch,
    BatchSettings,
    Row,
    RowError,
    output_place,
    plan_job_file,
    unusable_output,
    write_report,
)
from comfyfn.cli._batch_queue import (
    CONTROLS,
    QueueDb,
    QueuedRun,
    QueueName,
    QueueWork,
    check_queue_args,
    control_batch,
    run_queued,
)
from comfyfn.cli._common import (
    ComfyOrgKeyOpt,
    ServersOpt,
    err,
    esc,
    server_url,
    warnings_once,
    workflow_source,
)
from comfyfn.cli._engine import warm_servers
from comfyfn.cli._gateway import require_extras
from comfyfn.cli._progress import BatchProgress
from comfyfn.errors import ConfigError
from comfyfn.storage import Storage, StorageError
from comfyfn.workflow import server_source

Prime = Annotated[
    int | None,
    typer.Option(
        "--prime",
        "--concurrency",
        help="Jobs queued on each server beyond the running one (default: adapts to the "
        "job times measured on each server).",
    ),
]


class OnInterruptChoice(enum.StrEnum):
    finish = "finish"
    cancel = "cancel"


OnInterrupt = Annotated[
    OnInterruptChoice,
    typer.Option(
        help="What the first Ctrl-C (or SIGTERM) does to running jobs: finish or cancel; a "
        "second one cancels them and stops at once."
    ),
]


def execute(
    rows: Iterable[Row | RowError],
    output: Path,
    servers: list[str],
    *,
    workflow: Any,
    settings: BatchSettings,
    total: int | None,
    as_json: bool,
    on_interrupt: OnInterruptChoice,
    status_every: float,
    storage: Storage | None = None,
) -> None:
    """Run a batch with progress, a summary, a contact sheet and the exit code: 0 all done,
    1 some rows failed, 2 the output folder (or object store) cannot be used, 130 stopped by
    Ctrl-C/SIGTERM.
    With ``storage`` the images go there and ``output`` keeps the manifest and report."""
    try:
        batch = Batch(
            rows, output, servers=servers, workflow=workflow, settings=settings, storage=storage
        )
        counted, presses = _run(batch, total, on_interrupt, status_every)
        if presses > 1:
            err.print(
                "stopped at once: running jobs were cancelled on their servers; run the same "
                "command again to resume"
            )
            raise typer.Exit(130)
        summary, sheet = write_report(batch, counted)
    except (OSError, sqlite3.DatabaseError, ConfigError, StorageError, ExceptionGroup) as exc:
        unusable = unusable_output(exc, output)
        if unusable is None:
            raise
        err.print(f"[red]error:[/red] {esc(unusable)}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(summary.to_json())
    else:
        print_summary(summary, sheet)
    if presses:
        err.print("stopped before the end: run the same command again to resume")
        raise typer.Exit(130)
    if not summary.ok:
        raise typer.Exit(1)


def _run(
    batch: Batch, total: int | None, on_interrupt: OnInterruptChoice, status_every: float
) -> tuple[dict[str, int], int]:
    """Run to the end or until stopped: (results by state, Ctrl-C/SIGTERM presses)."""
    presses = 0
    with BatchProgress(batch, total) as progress:

        def interrupted() -> None:
            nonlocal presses
            presses += 1
            if presses > 1:
                err.print("stopping now: cancelling running jobs")
                batch.abandon()
                return
            cancel = on_interrupt == OnInterruptChoice.cancel
            err.print(
                "stopping: "
                + (
                    "cancelling running jobs (Ctrl-C again to stop at once)"
                    if cancel
                    else "running jobs finish (Ctrl-C again to stop at once)"
                )
            )
            batch.stop(cancel_running=cancel)

        async def consume() -> None:
            status = asyncio.create_task(progress.keep_saying(status_every))
            try:
                with _signals(asyncio.get_running_loop(), interrupted):
                    async for _ in batch.results():
                        pass
            finally:
                status.cancel()

        batch.on_event = progress.on_event
        with warnings_once():
            asyncio.run(consume())
    return progress.counted, presses


def print_summary(summary: Any, sheet: Path) -> None:
    err.print(
        f"done {summary.done} · failed {summary.failed} · invalid {summary.invalid} · "
        f"skipped {summary.skipped} · {summary.jobs_per_minute} jobs/min · "
        f"ran p50 {summary.p50 or 0:.2f}s · p95 {summary.p95 or 0:.2f}s · turnaround p50 "
        f"{summary.turnaround_p50 or 0:.2f}s · p95 {summary.turnaround_p95 or 0:.2f}s",
        highlight=False,
    )
    for url, s in summary.servers.items():
        err.print(
            f"  {esc(url)}: {s['done']} done, {s['failures']} failures, busy "
            f"{s['busy_fraction']:.0%}",
            highlight=False,
        )
    err.print(
        f"contact sheet: {esc(sheet)} · results: {esc(sheet.with_name('results.csv'))}",
        highlight=False,
    )


class _signals:
    """Ctrl-C (SIGINT) and SIGTERM stop the batch the same way for its duration: the first
    stops taking rows, the second stops at once (the default handlers are restored after)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> None:
        self.loop, self.handler = loop, handler

    def __enter__(self) -> None:
        if sys.platform != "win32":
            for sig in self.SIGNALS:
                self.loop.add_signal_handler(sig, self.handler)

    def __exit__(self, *exc: object) -> None:
        if sys.platform != "win32":
            for sig in self.SIGNALS:
                self.loop.remove_signal_handler(sig)


def resolve_servers(servers: list[str] | None) -> list[str]:
    return [server_url(s) for s in servers] if servers else [server_url(None)]


# -- options shared by `batch` and `recipe run` -------------------------------------------------

Retries = Annotated[int, typer.Option(help="Moves to another server on failure.")]
JobTimeout = Annotated[float | None, typer.Option(help="Seconds per job.")]
HttpTimeout = Annotated[
    float, typer.Option(help="Seconds before a silent server counts as failed.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
StatusEvery = Annotated[
    float,
    typer.Option(
        min=0,
        help="Off a terminal (a pipe, a log file, CI): print the counts after this many "
        "seconds without a line (0: only a line per finished row).",
    ),
]


def batch_command(
    source: Annotated[
        str | None,
        typer.Argument(
            help="prompts.csv, prompts.jsonl or a job.yaml; or status / cancel / retry (with --db) "
            "and a batch's name (a file named so: ./status).",
            show_default=False,
        ),
    ] = None,
    batch_name: Annotated[
        str | None, typer.Argument(help="The batch's name, after status or cancel.")
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Output folder, or s3://bucket/prefix (endpoint and credentials from the AWS "
            "environment variables; the manifest and report stay in --state).",
        ),
    ] = "out",
    state: Annotated[
        Path | None,
        typer.Option(
            help="With -o s3://…: the local folder of the manifest and report. Default: "
            "<comfyfn home>/batches/<hash of the URL>.",
            show_default=False,
        ),
    ] = None,
    server: ServersOpt = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Built-in name or workflow file.")
    ] = None,
    vary: Annotated[
        list[str] | None,
        typer.Option(help="name=a,b,c or name=1..8 (repeat for a cartesian product)."),
    ] = None,
    template: Annotated[
        str | None, typer.Option(help='Prompt template, e.g. "{prompt}, {style} style".')
    ] = None,
    prime: Prime = None,
    retries: Retries = 3,
    job_timeout: JobTimeout = None,
    http_timeout: HttpTimeout = 10.0,
    on_interrupt: OnInterrupt = OnInterruptChoice.finish,
    as_json: AsJson = False,
    status_every: StatusEvery = 30.0,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm",
            help="Before the rows, run the workflow's smallest job once on every server (so "
            "none pays the model load on a real row); a server that fails stops the batch.",
        ),
    ] = False,
    db: QueueDb = None,
    name: QueueName = None,
    work: QueueWork = False,
    comfy_org_key: ComfyOrgKeyOpt = None,
) -> None:
    """Run every row of a CSV/JSONL/YAML job file; re-running resumes where it stopped.
    With --db the rows go to the shared queue (status / cancel / retry NAME: see the batch)."""
    if db is not None or name is not None or work:
        require_extras(db, service=False)  # the store and its worker: no HTTP service
    if source in CONTROLS:
        control_batch(source, batch_name, db)
        return
    check_queue_args(source, batch_name, db, name, bool(server), work, warm)
    if source is None:  # follow a queued batch
        assert db is not None and name is not None  # check_queue_args
        following = QueuedRun(db, name, output, as_json=as_json, status_every=status_every)
        following.settings = BatchSettings(  # for --work: a worker here, placing as told
            prime=prime,
            retries=retries,
            job_timeout=job_timeout,
            http_timeout=http_timeout,
            comfy_org_key=comfy_org_key,
        )
        run_queued(following, state, None, server if work else None)
        return
    folder, storage = output_place(output, state)
    plan = plan_job_file(source, workflow=workflow, template=template, vary=vary or (), prime=prime)
    chosen = workflow_source(plan.workflow) if isinstance(plan.workflow, str) else plan.workflow
    settings = BatchSettings(
        prime=plan.prime,
        retries=retries,
        job_timeout=job_timeout,
        http_timeout=http_timeout,
        variables=plan.variables,
        comfy_org_key=comfy_org_key,
    )
    rows = plan.rows
    if db is not None:
        chosen = chosen or "zimage-turbo"
        served = None if work else server_source(chosen)
        if served is not None:
            raise ConfigError(
                f"--workflow {chosen}: a {served[0]} is served by ComfyUI; with --db it is "
                "loaded from the servers of --work: give --work --server URL"
            )
        queued = QueuedRun(db, name, output, rows=rows, workflow=chosen)
        queued.total, queued.settings = plan.total, settings
        queued.as_json, queued.status_every = as_json, status_every
        servers = resolve_servers(server) if work else None  # (once: it may start the engine)
        if warm and servers:  # (check_queue_args: with --work)
            warm_servers(servers, chosen, job_timeout)
        run_queued(queued, state, Path(source), servers)
        return
    if storage is not None:
        err.print(f"images to {esc(output)}; manifest and report in {esc(folder)}", highlight=False)
    servers = resolve_servers(server)
    if warm:
        warm_servers(servers, chosen or "zimage-turbo", job_timeout)
    execute(
        rows,
        folder,
        servers,
        workflow=chosen or "zimage-turbo",
        settings=settings,
        total=plan.total,
        as_json=as_json,
        on_interrupt=on_interrupt,
        status_every=status_every,
        storage=storage,
    )
